//! Einsum: sums of products over labelled axes. The reference evaluates the definition directly
//! (every assignment of the labels, in f64); the compiler rewrites the common forms into
//! Transpose, Reshape, ReduceSum and MatMul (`Einsum::plan`).

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::error::OpError;
use crate::invalid;
use crate::ops::conv::from_f64;
use crate::ops::{InferCx, Op, OpDef, expect_float, input, strides_of};
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;

/// An axis label: a letter, or the k-th dim of the ellipsis counted from its right end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    /// Ellipsis dims sort first in an implicit output.
    Ellipsis(usize),
    Letter(char),
}

/// One term of the equation: letters, with at most one ellipsis at `ellipsis`.
#[derive(Clone, Debug, PartialEq)]
struct Term {
    letters: Vec<char>,
    ellipsis: Option<usize>,
}

fn parse_term(t: &str) -> Result<Term, OpError> {
    let mut letters = vec![];
    let mut ellipsis = None;
    let mut rest = t;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("...") {
            if ellipsis.is_some() {
                invalid!("term '{t}' has two ellipses");
            }
            ellipsis = Some(letters.len());
            rest = r;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        if !c.is_ascii_alphabetic() {
            invalid!("'{c}' in term '{t}' is not a letter");
        }
        letters.push(c);
        rest = &rest[1..];
    }
    Ok(Term { letters, ellipsis })
}

impl Term {
    /// The labels of an operand of rank `rank`.
    fn labels(&self, rank: usize) -> Result<Vec<Label>, OpError> {
        let n = self.letters.len();
        match self.ellipsis {
            None if rank != n => invalid!("a term with {n} labels for an input of rank {rank}"),
            None => Ok(self.letters.iter().map(|&c| Label::Letter(c)).collect()),
            Some(_) if rank < n => invalid!("a term with {n} labels and an ellipsis for an input of rank {rank}"),
            Some(at) => {
                let e = rank - n;
                let mut out: Vec<Label> = self.letters[..at].iter().map(|&c| Label::Letter(c)).collect();
                out.extend((0..e).rev().map(Label::Ellipsis));
                out.extend(self.letters[at..].iter().map(|&c| Label::Letter(c)));
                Ok(out)
            }
        }
    }
}

/// An Einsum node. After inference `labels` holds each input's labels and `output` the output's.
#[derive(Clone, Debug, PartialEq)]
pub struct Einsum {
    pub equation: String,
    pub labels: Vec<Vec<Label>>,
    pub output: Vec<Label>,
}

/// How the compiler computes a two-input Einsum (no label repeated within an input, no ellipsis):
/// sum away labels only one input has, transpose A to `[batch, m, k]` and B to `[batch, k, n]`,
/// a batched MatMul, then the output order.
#[derive(Clone, Debug, PartialEq)]
pub struct MatMulPlan {
    /// Per input: axes to sum first (labels neither in the other input nor in the output).
    pub sum_first: [Vec<usize>; 2],
    /// Per input, after that sum: the permutation to `[batch, m, k]` (A) or `[batch, k, n]` (B).
    pub perm: [Vec<usize>; 2],
    pub batch: Vec<usize>,
    pub m: Vec<usize>,
    pub k: Vec<usize>,
    pub n: Vec<usize>,
    /// The permutation from `[batch, m, n]` to the output's order.
    pub out_perm: Vec<usize>,
}

impl Einsum {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let equation = a.string("equation", "")?;
        if equation.is_empty() {
            invalid!("the equation attribute is required");
        }
        Ok(Op::Einsum(Einsum { equation, labels: vec![], output: vec![] }))
    }

    /// Parses the equation for inputs of the given ranks: each input's labels and the output's.
    fn resolve(&self, ranks: &[usize]) -> Result<(Vec<Vec<Label>>, Vec<Label>), OpError> {
        let eq: String = self.equation.chars().filter(|c| !c.is_whitespace()).collect();
        let (lhs, rhs) = match eq.split_once("->") {
            Some((l, r)) => (l, Some(r)),
            None => (eq.as_str(), None),
        };
        let terms: Vec<Term> = lhs.split(',').map(parse_term).collect::<Result<_, _>>()?;
        if terms.len() != ranks.len() {
            invalid!("the equation '{}' has {} inputs, the node {}", self.equation, terms.len(), ranks.len());
        }
        let labels: Vec<Vec<Label>> = terms.iter().zip(ranks).map(|(t, &r)| t.labels(r)).collect::<Result<_, _>>()?;
        let ell = ranks.iter().zip(&terms).map(|(&r, t)| if t.ellipsis.is_some() { r - t.letters.len() } else { 0 });
        let ell = ell.max().unwrap_or(0);
        let output = match rhs {
            Some(r) => {
                let t = parse_term(r)?;
                let mut out = t.labels(t.letters.len() + if t.ellipsis.is_some() { ell } else { 0 })?;
                if t.ellipsis.is_none() && ell > 0 {
                    // Ellipsis dims summed away: allowed, they just do not appear.
                    out.retain(|l| matches!(l, Label::Letter(_)));
                }
                for (i, l) in out.iter().enumerate() {
                    if out[..i].contains(l) {
                        invalid!("label {l:?} appears twice in the output");
                    }
                    if !labels.iter().flatten().any(|x| x == l) {
                        invalid!("output label {l:?} is in no input");
                    }
                }
                out
            }
            None => {
                // Implicit: the ellipsis dims, then every letter seen exactly once, sorted.
                let mut out: Vec<Label> = (0..ell).rev().map(Label::Ellipsis).collect();
                let mut letters: Vec<char> = vec![];
                for t in &terms {
                    letters.extend(&t.letters);
                }
                let mut once: Vec<char> =
                    letters.iter().copied().filter(|c| letters.iter().filter(|x| *x == c).count() == 1).collect();
                once.sort_unstable();
                out.extend(once.into_iter().map(Label::Letter));
                out
            }
        };
        Ok((labels, output))
    }

    /// Every label's size, checked across inputs (ellipsis dims broadcast from 1).
    fn sizes(labels: &[Vec<Label>], shapes: &[Vec<Dim>]) -> Result<Vec<(Label, Dim)>, OpError> {
        let mut sizes: Vec<(Label, Dim)> = vec![];
        for (ls, shape) in labels.iter().zip(shapes) {
            for (l, d) in ls.iter().zip(shape) {
                match sizes.iter_mut().find(|(x, _)| x == l) {
                    None => sizes.push((*l, d.clone())),
                    Some((_, have)) if have == d => {}
                    Some((Label::Ellipsis(_), have)) if *have == Dim::Known(1) => *have = d.clone(),
                    Some((Label::Ellipsis(_), _)) if *d == Dim::Known(1) => {}
                    Some((_, have)) => invalid!("label {l:?} has sizes {have} and {d}"),
                }
            }
        }
        Ok(sizes)
    }

    /// The MatMul form of a two-input Einsum, when it has one (see [`MatMulPlan`]).
    pub fn matmul_plan(&self) -> Option<MatMulPlan> {
        let [a, b] = [self.labels.first()?, self.labels.get(1)?];
        if self.labels.len() != 2 {
            return None;
        }
        let repeated = |ls: &[Label]| ls.iter().enumerate().any(|(i, l)| ls[..i].contains(l));
        let ellipsis = |ls: &[Label]| ls.iter().any(|l| matches!(l, Label::Ellipsis(_)));
        if repeated(a) || repeated(b) || ellipsis(a) || ellipsis(b) {
            return None;
        }
        let out = &self.output;
        let sum_first = |x: &[Label], y: &[Label]| -> Vec<usize> {
            (0..x.len()).filter(|&i| !y.contains(&x[i]) && !out.contains(&x[i])).collect()
        };
        let sa = sum_first(a, b);
        let sb = sum_first(b, a);
        let keep = |x: &[Label], s: &[usize]| -> Vec<Label> {
            x.iter().enumerate().filter(|(i, _)| !s.contains(i)).map(|(_, l)| *l).collect()
        };
        let (ka, kb) = (keep(a, &sa), keep(b, &sb));
        let batch: Vec<Label> = out.iter().copied().filter(|l| ka.contains(l) && kb.contains(l)).collect();
        let m: Vec<Label> = ka.iter().copied().filter(|l| !kb.contains(l)).collect();
        let n: Vec<Label> = kb.iter().copied().filter(|l| !ka.contains(l)).collect();
        let k: Vec<Label> = ka.iter().copied().filter(|l| kb.contains(l) && !out.contains(l)).collect();
        let pos = |x: &[Label], l: &Label| x.iter().position(|y| y == l).unwrap_or(0);
        let perm_a: Vec<usize> = batch.iter().chain(&m).chain(&k).map(|l| pos(&ka, l)).collect();
        let perm_b: Vec<usize> = batch.iter().chain(&k).chain(&n).map(|l| pos(&kb, l)).collect();
        let bmn: Vec<Label> = batch.iter().chain(&m).chain(&n).copied().collect();
        if bmn.len() != out.len() {
            return None;
        }
        let out_perm: Vec<usize> = out.iter().map(|l| pos(&bmn, l)).collect();
        let idx = |x: &[Label], ls: &[Label]| ls.iter().map(|l| pos(x, l)).collect::<Vec<usize>>();
        Some(MatMulPlan {
            sum_first: [sa, sb],
            perm: [perm_a, perm_b],
            batch: idx(&ka, &batch),
            m: idx(&ka, &m),
            k: idx(&ka, &k),
            n: idx(&kb, &n),
            out_perm,
        })
    }
}

impl OpDef for Einsum {
    fn name(&self) -> &'static str {
        "Einsum"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        if cx.is_empty() {
            invalid!("expects at least one input");
        }
        let tys: Vec<&TensorType> = (0..cx.len()).map(|i| cx.ty(i)).collect::<Result<_, _>>()?;
        for t in &tys {
            expect_float(t, "input")?;
            if t.dtype != tys[0].dtype {
                invalid!("input types differ ({} vs {})", t.dtype, tys[0].dtype);
            }
        }
        let ranks: Vec<usize> = tys.iter().map(|t| t.rank()).collect();
        let (labels, output) = self.resolve(&ranks)?;
        let shapes: Vec<Vec<Dim>> = tys.iter().map(|t| t.shape.clone()).collect();
        let sizes = Einsum::sizes(&labels, &shapes)?;
        let shape = output
            .iter()
            .map(|l| sizes.iter().find(|(x, _)| x == l).map(|(_, d)| d.clone()).unwrap_or(Dim::Known(1)))
            .collect();
        self.labels = labels;
        self.output = output;
        Ok(vec![TensorType::new(tys[0].dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let ts: Vec<&Tensor> = (0..inputs.len()).map(|i| input(inputs, i)).collect::<Result<_, _>>()?;
        let ranks: Vec<usize> = ts.iter().map(|t| t.rank()).collect();
        let (labels, output) = self.resolve(&ranks)?;
        let shapes: Vec<Vec<Dim>> = ts.iter().map(|t| crate::shape::known_shape(t.shape())).collect();
        let sizes = Einsum::sizes(&labels, &shapes)?;
        // Every label: the output's first, then the summed ones.
        let mut all: Vec<Label> = output.clone();
        all.extend(sizes.iter().map(|(l, _)| *l).filter(|l| !output.contains(l)));
        let size_of = |l: &Label| sizes.iter().find(|(x, _)| x == l).and_then(|(_, d)| d.known()).unwrap_or(1);
        let extent: Vec<usize> = all.iter().map(size_of).collect();
        // Per input, the element stride of each label (0 for a broadcast ellipsis dim).
        let strides: Vec<Vec<usize>> = ts
            .iter()
            .zip(&labels)
            .map(|(t, ls)| {
                let own = strides_of(t.shape());
                all.iter()
                    .map(|l| {
                        // A repeated label walks the diagonal: the strides add up.
                        ls.iter()
                            .enumerate()
                            .filter(|(i, x)| *x == l && !(t.shape()[*i] == 1 && size_of(l) != 1))
                            .map(|(i, _)| own[i])
                            .sum()
                    })
                    .collect()
            })
            .collect();
        let values: Vec<Vec<f64>> = ts.iter().map(|t| t.to_f64s()).collect::<Result<_, _>>()?;
        let out_n: usize = extent[..output.len()].iter().product();
        let sum_n: usize = extent[output.len()..].iter().product();
        let mut out = vec![0f64; out_n];
        let mut idx = vec![0usize; all.len()];
        for (o, slot) in out.iter_mut().enumerate() {
            // Output position o, then every assignment of the summed labels.
            let mut rest = o;
            for d in (0..output.len()).rev() {
                idx[d] = rest % extent[d];
                rest /= extent[d];
            }
            let mut acc = 0f64;
            for s in 0..sum_n {
                let mut rest = s;
                for d in (output.len()..all.len()).rev() {
                    idx[d] = rest % extent[d];
                    rest /= extent[d];
                }
                let mut p = 1f64;
                for (v, st) in values.iter().zip(&strides) {
                    let off: usize = idx.iter().zip(st).map(|(i, s)| i * s).sum();
                    p *= v[off];
                }
                acc += p;
            }
            *slot = acc;
        }
        let shape: Vec<usize> = extent[..output.len()].to_vec();
        Ok(vec![from_f64(ts[0].dtype(), shape, out)])
    }

    fn attrs(&self) -> AttrList {
        vec![("equation", AttrValue::Str(self.equation.clone()))]
    }

    fn macs(&self, inputs: &[Option<&TensorType>], _outputs: &[TensorType]) -> u64 {
        let shapes: Vec<Vec<Dim>> = inputs.iter().flatten().map(|t| t.shape.clone()).collect();
        let Ok(sizes) = Einsum::sizes(&self.labels, &shapes) else { return 0 };
        sizes.iter().map(|(_, d)| d.known().unwrap_or(1) as u64).product()
    }
}
