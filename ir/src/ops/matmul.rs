//! Gemm and MatMul.

use rayon::prelude::*;

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::error::OpError;
use crate::invalid;
use crate::ops::binary::{broadcast_offsets, broadcast_shapes};
use crate::ops::conv::from_f64;
use crate::ops::{InferCx, Op, OpDef, expect_float, input, need_known, opt_input, same_dtype};
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;

/// `Y = alpha * A' B' + beta * C` with `A'`, `B'` optionally transposed and `C` broadcast to `[M, N]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemm {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl Gemm {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::Gemm(Gemm {
            alpha: a.float("alpha", 1.0)?,
            beta: a.float("beta", 1.0)?,
            trans_a: a.int("transA", 0)? != 0,
            trans_b: a.int("transB", 0)? != 0,
        }))
    }

    /// (M, K, N) from the shapes of A and B.
    pub(crate) fn dims(&self, a: &[Dim], b: &[Dim]) -> Result<(Dim, Dim, Dim), OpError> {
        if a.len() != 2 || b.len() != 2 {
            invalid!("A and B must be matrices, found ranks {} and {}", a.len(), b.len());
        }
        let (m, ka) = if self.trans_a { (&a[1], &a[0]) } else { (&a[0], &a[1]) };
        let (kb, n) = if self.trans_b { (&b[1], &b[0]) } else { (&b[0], &b[1]) };
        if ka != kb {
            invalid!("inner dimensions differ: A gives K = {ka}, B gives K = {kb}");
        }
        Ok((m.clone(), ka.clone(), n.clone()))
    }
}

impl OpDef for Gemm {
    fn name(&self) -> &'static str {
        "Gemm"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 3)?;
        let (a, b) = (cx.ty(0)?, cx.ty(1)?);
        expect_float(a, "A")?;
        same_dtype(a, b, "A and B")?;
        let (m, _, n) = self.dims(&a.shape, &b.shape)?;
        if let Some(c) = cx.opt_ty(2) {
            same_dtype(a, c, "A and C")?;
            let out = [m.clone(), n.clone()];
            if c.rank() > 2 || broadcast_shapes(&out, &c.shape)? != out {
                invalid!("C {c} does not broadcast to [{m},{n}]");
            }
        }
        Ok(vec![TensorType::new(a.dtype, vec![m, n])])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let (as_, bs) = (a.shape(), b.shape());
        let (m, k) = if self.trans_a { (as_[1], as_[0]) } else { (as_[0], as_[1]) };
        let n = if self.trans_b { bs[0] } else { bs[1] };
        let (av, bv) = (a.to_f64s()?, b.to_f64s()?);
        let at = |i: usize, p: usize| if self.trans_a { av[p * m + i] } else { av[i * k + p] };
        let bt = |p: usize, j: usize| if self.trans_b { bv[j * k + p] } else { bv[p * n + j] };
        let cv = match opt_input(inputs, 2) {
            Some(c) => {
                let offs = broadcast_offsets(c.shape(), &[m, n]);
                let v = c.to_f64s()?;
                offs.into_iter().map(|o| v[o]).collect()
            }
            None => vec![0f64; m * n],
        };
        let mut out = vec![0f64; m * n];
        out.par_chunks_mut(n.max(1)).enumerate().for_each(|(i, row)| {
            for (j, o) in row.iter_mut().enumerate() {
                let dot: f64 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
                *o = self.alpha as f64 * dot + self.beta as f64 * cv[i * n + j];
            }
        });
        Ok(vec![from_f64(a.dtype(), vec![m, n], out)])
    }

    fn attrs(&self) -> AttrList {
        vec![
            ("alpha", AttrValue::Float(self.alpha)),
            ("beta", AttrValue::Float(self.beta)),
            ("transA", AttrValue::Int(self.trans_a as i64)),
            ("transB", AttrValue::Int(self.trans_b as i64)),
        ]
    }

    fn macs(&self, inputs: &[Option<&TensorType>], _: &[TensorType]) -> u64 {
        let (Some(Some(a)), Some(Some(b))) = (inputs.first(), inputs.get(1)) else { return 0 };
        match self.dims(&a.shape, &b.shape) {
            Ok((m, k, n)) => [m, k, n].iter().map(|d| d.known().unwrap_or(0) as u64).product(),
            Err(_) => 0,
        }
    }
}

/// Output shape, batch shape, and (M, K, N).
type MatMulPlan = (Vec<Dim>, Vec<Dim>, [Dim; 3]);

/// numpy `matmul`: batched over leading dims with broadcasting; 1-D operands are promoted to
/// matrices and the added dim removed from the result.
#[derive(Clone, Debug, PartialEq)]
pub struct MatMul;

impl MatMul {
    pub fn build(_: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::MatMul(MatMul))
    }

    /// Output shape, batch shape, (M, K, N) of the promoted operands.
    fn plan(a: &[Dim], b: &[Dim]) -> Result<MatMulPlan, OpError> {
        if a.is_empty() || b.is_empty() {
            invalid!("MatMul operands must have rank >= 1");
        }
        let a2: Vec<Dim> = if a.len() == 1 { vec![Dim::Known(1), a[0].clone()] } else { a.to_vec() };
        let b2: Vec<Dim> = if b.len() == 1 { vec![b[0].clone(), Dim::Known(1)] } else { b.to_vec() };
        let (m, ka) = (&a2[a2.len() - 2], &a2[a2.len() - 1]);
        let (kb, n) = (&b2[b2.len() - 2], &b2[b2.len() - 1]);
        if ka != kb {
            invalid!("inner dimensions differ ({ka} vs {kb})");
        }
        let batch = broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
        let mut out = batch.clone();
        if a.len() > 1 {
            out.push(m.clone());
        }
        if b.len() > 1 {
            out.push(n.clone());
        }
        Ok((out, batch, [m.clone(), ka.clone(), n.clone()]))
    }
}

impl OpDef for MatMul {
    fn name(&self) -> &'static str {
        "MatMul"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 2)?;
        let (a, b) = (cx.ty(0)?, cx.ty(1)?);
        expect_float(a, "A")?;
        same_dtype(a, b, "A and B")?;
        let (out, _, _) = MatMul::plan(&a.shape, &b.shape)?;
        Ok(vec![TensorType::new(a.dtype, out)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let (res, out) = MatMul::sums(&a.to_f64s()?, a.shape(), &b.to_f64s()?, b.shape())?;
        Ok(vec![from_f64(a.dtype(), out, res)])
    }

    fn macs(&self, inputs: &[Option<&TensorType>], outputs: &[TensorType]) -> u64 {
        let (Some(Some(a)), Some(o)) = (inputs.first(), outputs.first()) else { return 0 };
        let k = a.shape.last().and_then(Dim::known).unwrap_or(0);
        (o.numel().unwrap_or(0) * k) as u64
    }
}

impl MatMul {
    /// The output shape of operands of these dims (any element types: the integer MatMuls share it).
    pub(crate) fn output_shape(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, OpError> {
        Ok(MatMul::plan(a, b)?.0)
    }

    /// The products' sums in f64: the reference of MatMul, and exact for the integer MatMuls
    /// (their sums stay far below 2^53). Returns the output and its shape.
    pub(crate) fn sums(
        av: &[f64],
        ashape: &[usize],
        bv: &[f64],
        bshape: &[usize],
    ) -> Result<(Vec<f64>, Vec<usize>), OpError> {
        let ks = |s: &[usize]| crate::shape::known_shape(s);
        let (out, batch, [m, k, n]) = MatMul::plan(&ks(ashape), &ks(bshape))?;
        let known = |d: &Dim| need_known(d, "dim");
        let (m, k, n) = (known(&m)?, known(&k)?, known(&n)?);
        let batch: Vec<usize> = batch.iter().map(known).collect::<Result<_, _>>()?;
        let out: Vec<usize> = out.iter().map(known).collect::<Result<_, _>>()?;
        // Batch offsets of each operand (in units of whole matrices).
        let abatch = if ashape.len() > 2 { &ashape[..ashape.len() - 2] } else { &[][..] };
        let bbatch = if bshape.len() > 2 { &bshape[..bshape.len() - 2] } else { &[][..] };
        let oa = broadcast_offsets(abatch, &batch);
        let ob = broadcast_offsets(bbatch, &batch);
        let nb: usize = batch.iter().product();
        let mut res = vec![0f64; nb * m * n];
        // Rows are independent and each is summed in the same order on any thread.
        res.par_chunks_mut(n.max(1)).enumerate().for_each(|(r, o)| {
            let (bi, i) = (r / m.max(1), r % m.max(1));
            let (ab, bb) = (&av[oa[bi] * m * k..][..m * k], &bv[ob[bi] * k * n..][..k * n]);
            for p in 0..k {
                let x = ab[i * k + p];
                for j in 0..n {
                    o[j] += x * bb[p * n + j];
                }
            }
        });
        Ok((res, out))
    }
}
