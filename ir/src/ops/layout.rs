//! Ops that move or view elements without arithmetic: Flatten, Reshape, Transpose, Squeeze,
//! Unsqueeze, Concat, Split, Slice, Expand, DepthToSpace, SpaceToDepth.

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::error::OpError;
use crate::invalid;
use crate::ops::binary::{broadcast_offsets, broadcast_shapes};
use crate::ops::{InferCx, Op, OpDef, input, need_known, norm_axis, opt_input, raw_tensor, raw_view, strides_of};
use crate::shape::{Dim, Shape, TensorType, known_shape, static_dims};
use crate::tensor::Tensor;
use crate::with_dtype;

/// Permutes the dims of any tensor.
pub fn transpose_tensor(t: &Tensor, perm: &[usize]) -> Result<Tensor, OpError> {
    let shape = t.shape();
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let in_strides = strides_of(shape);
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    with_dtype!(t.dtype(), T => {
        let src = raw_view::<T>(t)?;
        let mut out = Vec::with_capacity(src.len());
        crate::ops::for_each_index(&out_shape, |idx| {
            let off: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
            out.push(src[off]);
        });
        raw_tensor(t.dtype(), out_shape, out)
    })
}

fn reshape_same(t: &Tensor, shape: Vec<usize>) -> Result<Vec<Tensor>, OpError> {
    Ok(vec![t.reshaped(shape)?])
}

fn dims_of(t: &Tensor) -> Shape {
    known_shape(t.shape())
}

/// `[d0..d(axis-1)] x [d(axis)..]` as a matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Flatten {
    pub axis: i64,
}

impl Flatten {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::Flatten(Flatten { axis: a.int("axis", 1)? }))
    }

    fn shape(&self, s: &[Dim]) -> Result<Shape, OpError> {
        let r = s.len() as i64;
        if self.axis < -r || self.axis > r {
            invalid!("axis {} is out of range for rank {r}", self.axis);
        }
        let axis = if self.axis < 0 { self.axis + r } else { self.axis } as usize;
        Ok(vec![product(&s[..axis])?, product(&s[axis..])?])
    }
}

/// Product of dims; a single symbolic dim among 1s stays symbolic.
fn product(s: &[Dim]) -> Result<Dim, OpError> {
    let syms: Vec<&Dim> = s.iter().filter(|d| d.known().is_none()).collect();
    let known: usize = s.iter().filter_map(Dim::known).product();
    match syms.as_slice() {
        [] => Ok(Dim::Known(known)),
        [d] if known == 1 => Ok((*d).clone()),
        _ => Err(OpError::DynamicShape(format!(
            "a product of symbolic dimensions ({}); bind them with ImportOptions::dims",
            syms.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

impl OpDef for Flatten {
    fn name(&self) -> &'static str {
        "Flatten"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 1)?;
        let x = cx.ty(0)?;
        Ok(vec![TensorType::new(x.dtype, self.shape(&x.shape)?)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let s = static_dims(&self.shape(&dims_of(x))?).unwrap_or_default();
        reshape_same(x, s)
    }
    fn attrs(&self) -> AttrList {
        vec![("axis", AttrValue::Int(self.axis))]
    }
}

/// Reshape to the shape given by input 1 (0 copies the input dim unless `allowzero`; -1 is inferred).
#[derive(Clone, Debug, PartialEq)]
pub struct Reshape {
    pub allowzero: bool,
}

impl Reshape {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::Reshape(Reshape { allowzero: a.int("allowzero", 0)? != 0 }))
    }

    fn shape(&self, x: &[Dim], target: &[i64]) -> Result<Shape, OpError> {
        let mut out: Vec<Option<Dim>> = Vec::with_capacity(target.len());
        let mut infer_at = None;
        for (i, &t) in target.iter().enumerate() {
            out.push(match t {
                -1 => {
                    if infer_at.replace(i).is_some() {
                        invalid!("shape {target:?} has more than one -1");
                    }
                    None
                }
                0 if !self.allowzero => match x.get(i) {
                    Some(d) => Some(d.clone()),
                    None => invalid!("shape {target:?} copies dim {i} (0) but the input has rank {}", x.len()),
                },
                t if t < 0 => invalid!("shape {target:?} has a negative dim {t}"),
                t => Some(Dim::Known(t as usize)),
            });
        }
        // Element counts: known product and the multiset of symbols on each side.
        let split = |dims: &mut dyn Iterator<Item = &Dim>| {
            let mut known = 1u128;
            let mut syms: Vec<String> = vec![];
            for d in dims {
                match d {
                    Dim::Known(n) => known = known.saturating_mul(*n as u128),
                    Dim::Sym(s) => syms.push(s.clone()),
                }
            }
            syms.sort();
            (known, syms)
        };
        let (kin, sin) = split(&mut x.iter());
        let (kout, mut sout) = split(&mut out.iter().flatten());
        let show = || format!("[{}]", x.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","));
        match infer_at {
            Some(i) => {
                // Symbols the output does not copy must all end up in the -1 dim.
                let mut rest = sin.clone();
                for s in &sout {
                    match rest.iter().position(|r| r == s) {
                        Some(p) => {
                            rest.remove(p);
                        }
                        None => return Err(OpError::DynamicShape(format!("reshape of {} to {target:?}", show()))),
                    }
                }
                let d = match rest.as_slice() {
                    [] if kout != 0 && kin % kout == 0 => Dim::Known((kin / kout) as usize),
                    [] => invalid!("cannot reshape {} ({kin} elements) to {target:?}", show()),
                    [s] if kin == kout => Dim::Sym(s.clone()),
                    _ => return Err(OpError::DynamicShape(format!("reshape of {} to {target:?}", show()))),
                };
                out[i] = Some(d);
            }
            None => {
                sout.sort();
                if sin == sout && kin != kout {
                    invalid!("cannot reshape {} ({kin} elements) to {target:?} ({kout} elements)", show());
                }
                if sin != sout {
                    return Err(OpError::DynamicShape(format!("reshape of {} to {target:?}", show())));
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }
}

impl OpDef for Reshape {
    fn name(&self) -> &'static str {
        "Reshape"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 2)?;
        let x = cx.ty(0)?;
        let target = cx.const_ints(1, "target shape")?.unwrap_or_default();
        Ok(vec![TensorType::new(x.dtype, self.shape(&x.shape, &target)?)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let target = input(inputs, 1)?.to_i64s()?;
        let s = static_dims(&self.shape(&dims_of(x), &target)?).unwrap_or_default();
        reshape_same(x, s)
    }
    fn attrs(&self) -> AttrList {
        if self.allowzero { vec![("allowzero", AttrValue::Int(1))] } else { vec![] }
    }
}

/// Permutes dims; the default (reversal) is made explicit by shape inference.
#[derive(Clone, Debug, PartialEq)]
pub struct Transpose {
    pub perm: Vec<usize>,
}

impl Transpose {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let perm = a.opt_ints("perm")?.unwrap_or_default();
        if perm.iter().any(|&p| p < 0) {
            invalid!("perm {perm:?} has a negative entry");
        }
        Ok(Op::Transpose(Transpose { perm: perm.into_iter().map(|p| p as usize).collect() }))
    }
}

impl OpDef for Transpose {
    fn name(&self) -> &'static str {
        "Transpose"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 1)?;
        let x = cx.ty(0)?;
        if self.perm.is_empty() {
            self.perm = (0..x.rank()).rev().collect();
        }
        let mut seen = vec![false; x.rank()];
        if self.perm.len() != x.rank()
            || self.perm.iter().any(|&p| p >= x.rank() || std::mem::replace(&mut seen[p], true))
        {
            invalid!("perm {:?} is not a permutation of the {} dims of {x}", self.perm, x.rank());
        }
        Ok(vec![TensorType::new(x.dtype, self.perm.iter().map(|&p| x.shape[p].clone()).collect())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let perm: Vec<usize> = if self.perm.is_empty() { (0..x.rank()).rev().collect() } else { self.perm.clone() };
        Ok(vec![transpose_tensor(x, &perm)?])
    }
    fn attrs(&self) -> AttrList {
        vec![("perm", AttrValue::Ints(self.perm.iter().map(|&p| p as i64).collect()))]
    }
}

fn norm_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, OpError> {
    let mut out: Vec<usize> = axes.iter().map(|&a| norm_axis(a, rank)).collect::<Result<_, _>>()?;
    out.sort();
    if out.windows(2).any(|w| w[0] == w[1]) {
        invalid!("axes {axes:?} repeat an axis");
    }
    Ok(out)
}

/// Removes size-1 dims: those listed in the axes input, or every 1 when absent.
#[derive(Clone, Debug, PartialEq)]
pub struct Squeeze;

impl Squeeze {
    pub fn build(_: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::Squeeze(Squeeze))
    }

    fn shape(x: &[Dim], axes: Option<&[i64]>) -> Result<Shape, OpError> {
        match axes {
            Some(axes) => {
                let axes = norm_axes(axes, x.len())?;
                for &a in &axes {
                    if x[a] != Dim::Known(1) {
                        invalid!("cannot squeeze axis {a} of size {}", x[a]);
                    }
                }
                Ok(x.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, d)| d.clone()).collect())
            }
            None => {
                if x.iter().any(|d| d.known().is_none()) {
                    return Err(OpError::DynamicShape("Squeeze without axes on a symbolic shape".into()));
                }
                Ok(x.iter().filter(|d| **d != Dim::Known(1)).cloned().collect())
            }
        }
    }
}

impl OpDef for Squeeze {
    fn name(&self) -> &'static str {
        "Squeeze"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 2)?;
        let x = cx.ty(0)?;
        let axes = cx.const_ints(1, "axes")?;
        Ok(vec![TensorType::new(x.dtype, Squeeze::shape(&x.shape, axes.as_deref())?)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let axes = opt_input(inputs, 1).map(|a| a.to_i64s()).transpose()?;
        let s = static_dims(&Squeeze::shape(&dims_of(x), axes.as_deref())?).unwrap_or_default();
        reshape_same(x, s)
    }
}

/// Inserts size-1 dims at the axes given by input 1 (positions in the output).
#[derive(Clone, Debug, PartialEq)]
pub struct Unsqueeze;

impl Unsqueeze {
    pub fn build(_: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::Unsqueeze(Unsqueeze))
    }

    fn shape(x: &[Dim], axes: &[i64]) -> Result<Shape, OpError> {
        let rank = x.len() + axes.len();
        let axes = norm_axes(axes, rank)?;
        let mut src = x.iter();
        Ok((0..rank)
            .map(|i| if axes.contains(&i) { Dim::Known(1) } else { src.next().cloned().unwrap_or(Dim::Known(1)) })
            .collect())
    }
}

impl OpDef for Unsqueeze {
    fn name(&self) -> &'static str {
        "Unsqueeze"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 2)?;
        let x = cx.ty(0)?;
        let axes = cx.const_ints(1, "axes")?.unwrap_or_default();
        Ok(vec![TensorType::new(x.dtype, Unsqueeze::shape(&x.shape, &axes)?)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let axes = input(inputs, 1)?.to_i64s()?;
        let s = static_dims(&Unsqueeze::shape(&dims_of(x), &axes)?).unwrap_or_default();
        reshape_same(x, s)
    }
}

/// Joins tensors along an axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Concat {
    pub axis: i64,
}

impl Concat {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let axis = a.opt_int("axis")?.ok_or_else(|| OpError::Invalid("attribute 'axis' is required".into()))?;
        Ok(Op::Concat(Concat { axis }))
    }
}

impl OpDef for Concat {
    fn name(&self) -> &'static str {
        "Concat"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, usize::MAX)?;
        let first = cx.ty(0)?;
        let axis = norm_axis(self.axis, first.rank())?;
        self.axis = axis as i64;
        let mut total = 0usize;
        for i in 0..cx.len() {
            let t = cx.ty(i)?;
            if t.dtype != first.dtype || t.rank() != first.rank() {
                invalid!("input {i} {t} does not match input 0 {first}");
            }
            for (k, (a, b)) in t.shape.iter().zip(&first.shape).enumerate() {
                if k != axis && a != b {
                    invalid!("input {i} {t} differs from input 0 {first} in dim {k}");
                }
            }
            total += need_known(&t.shape[axis], "the concatenated dim")?;
        }
        let mut shape = first.shape.clone();
        shape[axis] = Dim::Known(total);
        Ok(vec![TensorType::new(first.dtype, shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let first = input(inputs, 0)?;
        let axis = norm_axis(self.axis, first.rank())?;
        let outer: usize = first.shape()[..axis].iter().product();
        let mut shape = first.shape().to_vec();
        shape[axis] = inputs.iter().flatten().map(|t| t.shape()[axis]).sum();
        with_dtype!(first.dtype(), T => {
            let views = inputs.iter().flatten().map(|t| raw_view::<T>(t)).collect::<Result<Vec<_>, _>>()?;
            let chunks: Vec<usize> = inputs.iter().flatten().map(|t| t.shape()[axis..].iter().product()).collect();
            let mut out = Vec::with_capacity(shape.iter().product());
            for o in 0..outer {
                for (v, &c) in views.iter().zip(&chunks) {
                    out.extend_from_slice(&v[o * c..][..c]);
                }
            }
            Ok(vec![raw_tensor(first.dtype(), shape, out)?])
        })
    }
    fn attrs(&self) -> AttrList {
        vec![("axis", AttrValue::Int(self.axis))]
    }
}

/// Splits a tensor along an axis by the sizes in input 1, or into `num_outputs` parts (the last
/// one smaller when the dim does not divide evenly).
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub axis: i64,
    pub num_outputs: Option<usize>,
}

impl Split {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let axis = a.int("axis", 0)?;
        let num_outputs = a.opt_int("num_outputs")?;
        if num_outputs.is_some_and(|n| n < 1) {
            invalid!("num_outputs must be positive");
        }
        Ok(Op::Split(Split { axis, num_outputs: num_outputs.map(|n| n as usize) }))
    }

    fn sizes(&self, dim: usize, split: Option<Vec<i64>>, n_outputs: usize) -> Result<Vec<usize>, OpError> {
        match split {
            Some(s) => {
                if s.iter().any(|&v| v < 0) || s.iter().map(|&v| v as i128).sum::<i128>() != dim as i128 {
                    invalid!("split sizes {s:?} do not add up to the dim {dim}");
                }
                Ok(s.into_iter().map(|v| v as usize).collect())
            }
            None => {
                let n = self.num_outputs.unwrap_or(n_outputs);
                if n == 0 {
                    invalid!("no outputs");
                }
                let part = dim.div_ceil(n);
                if self.num_outputs.is_none() && !dim.is_multiple_of(n) {
                    invalid!("dim {dim} does not split evenly into {n} outputs");
                }
                Ok((0..n).map(|i| part.min(dim.saturating_sub(i * part))).collect())
            }
        }
    }
}

impl OpDef for Split {
    fn name(&self) -> &'static str {
        "Split"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 2)?;
        let x = cx.ty(0)?;
        let axis = norm_axis(self.axis, x.rank())?;
        self.axis = axis as i64;
        let dim = need_known(&x.shape[axis], "the split dim")?;
        let split = cx.const_ints(1, "split sizes")?;
        // Checked before the sizes are listed, which would allocate one per part.
        if let Some(n) = self.num_outputs
            && n != cx.n_outputs
        {
            invalid!("num_outputs is {n} but the node has {} outputs", cx.n_outputs);
        }
        let has_split = split.is_some();
        let sizes = self.sizes(dim, split, cx.n_outputs)?;
        if sizes.len() != cx.n_outputs {
            invalid!("splits into {} parts but the node has {} outputs", sizes.len(), cx.n_outputs);
        }
        if !has_split {
            self.num_outputs = Some(cx.n_outputs);
        }
        Ok(sizes
            .into_iter()
            .map(|s| {
                let mut shape = x.shape.clone();
                shape[axis] = Dim::Known(s);
                TensorType::new(x.dtype, shape)
            })
            .collect())
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let axis = norm_axis(self.axis, x.rank())?;
        let split = opt_input(inputs, 1).map(|s| s.to_i64s()).transpose()?;
        let sizes = self.sizes(x.shape()[axis], split, self.num_outputs.unwrap_or(1))?;
        let outer: usize = x.shape()[..axis].iter().product();
        let inner: usize = x.shape()[axis + 1..].iter().product();
        let dim = x.shape()[axis];
        with_dtype!(x.dtype(), T => {
            let v = raw_view::<T>(x)?;
            let mut start = 0;
            let mut outs = vec![];
            for &s in &sizes {
                let mut out = Vec::with_capacity(outer * s * inner);
                for o in 0..outer {
                    out.extend_from_slice(&v[(o * dim + start) * inner..][..s * inner]);
                }
                let mut shape = x.shape().to_vec();
                shape[axis] = s;
                outs.push(raw_tensor(x.dtype(), shape, out)?);
                start += s;
            }
            Ok(outs)
        })
    }
    fn attrs(&self) -> AttrList {
        let mut a = vec![("axis", AttrValue::Int(self.axis))];
        if let Some(n) = self.num_outputs {
            a.push(("num_outputs", AttrValue::Int(n as i64)));
        }
        a
    }
}

/// Strided slices given by inputs starts, ends, axes and steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Slice;

/// Per output dim: (start, step, count).
type SliceSpec = Vec<(i64, i64, usize)>;

impl Slice {
    pub fn build(_: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::Slice(Slice))
    }

    fn spec(
        x: &[Dim],
        starts: &[i64],
        ends: &[i64],
        axes: Option<&[i64]>,
        steps: Option<&[i64]>,
    ) -> Result<(SliceSpec, Shape), OpError> {
        let n = starts.len();
        if ends.len() != n || axes.is_some_and(|a| a.len() != n) || steps.is_some_and(|s| s.len() != n) {
            invalid!("starts, ends, axes and steps must have the same length");
        }
        let axes: Vec<usize> = match axes {
            Some(a) => a.iter().map(|&a| norm_axis(a, x.len())).collect::<Result<_, _>>()?,
            None if n <= x.len() => (0..n).collect(),
            None => invalid!("{n} starts without axes for an input of rank {}", x.len()),
        };
        let mut seen = vec![false; x.len()];
        let mut spec: SliceSpec = vec![(0, 1, 0); x.len()];
        let mut shape = x.to_vec();
        for (k, d) in x.iter().enumerate() {
            if let Dim::Known(d) = d {
                spec[k] = (0, 1, *d);
            }
        }
        for i in 0..n {
            let ax = axes[i];
            if std::mem::replace(&mut seen[ax], true) {
                invalid!("axis {ax} is sliced twice");
            }
            let step = steps.map_or(1, |s| s[i]);
            if step == 0 || step.unsigned_abs() > crate::ops::conv::MAX_ATTR as u64 {
                invalid!("step {step} must be nonzero and within 2^31");
            }
            let dim = need_known(&x[ax], &format!("sliced dim {ax}"))? as i64;
            let fix = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
            let (start, end) = (fix(starts[i]), fix(ends[i]));
            let (start, end) = if step > 0 {
                (start.clamp(0, dim), end.clamp(0, dim))
            } else if dim == 0 {
                // No last index to start from: select nothing.
                (0, 0)
            } else {
                (start.clamp(0, dim - 1), end.clamp(-1, dim - 1))
            };
            let count = if step > 0 {
                if end > start { (end - start + step - 1) / step } else { 0 }
            } else if start > end {
                (start - end + (-step) - 1) / (-step)
            } else {
                0
            };
            spec[ax] = (start, step, count as usize);
            shape[ax] = Dim::Known(count as usize);
        }
        Ok((spec, shape))
    }
}

impl OpDef for Slice {
    fn name(&self) -> &'static str {
        "Slice"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(3, 5)?;
        let x = cx.ty(0)?;
        let starts = cx.const_ints(1, "starts")?.unwrap_or_default();
        let ends = cx.const_ints(2, "ends")?.unwrap_or_default();
        let axes = cx.const_ints(3, "axes")?;
        let steps = cx.const_ints(4, "steps")?;
        let (_, shape) = Slice::spec(&x.shape, &starts, &ends, axes.as_deref(), steps.as_deref())?;
        Ok(vec![TensorType::new(x.dtype, shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let ints = |i: usize| opt_input(inputs, i).map(|t| t.to_i64s()).transpose();
        let (starts, ends) = (input(inputs, 1)?.to_i64s()?, input(inputs, 2)?.to_i64s()?);
        let (axes, steps) = (ints(3)?, ints(4)?);
        let (spec, shape) = Slice::spec(&dims_of(x), &starts, &ends, axes.as_deref(), steps.as_deref())?;
        let out_shape = static_dims(&shape).unwrap_or_default();
        let strides = strides_of(x.shape());
        with_dtype!(x.dtype(), T => {
            let v = raw_view::<T>(x)?;
            let mut out = Vec::with_capacity(out_shape.iter().product());
            crate::ops::for_each_index(&out_shape, |idx| {
                let off: i64 = idx.iter().enumerate().map(|(k, &i)| (spec[k].0 + spec[k].1 * i as i64) * strides[k] as i64).sum();
                out.push(v[off as usize]);
            });
            Ok(vec![raw_tensor(x.dtype(), out_shape, out)?])
        })
    }
}

/// Broadcasts the input to the shape in input 1 (numpy rules, both ways).
#[derive(Clone, Debug, PartialEq)]
pub struct Expand;

impl Expand {
    pub fn build(_: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::Expand(Expand))
    }
}

fn dims_from_ints(v: &[i64], what: &str) -> Result<Shape, OpError> {
    v.iter()
        .map(|&d| {
            if d < 0 {
                invalid!("{what} {v:?} has a negative dim");
            }
            Ok(Dim::Known(d as usize))
        })
        .collect()
}

impl OpDef for Expand {
    fn name(&self) -> &'static str {
        "Expand"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 2)?;
        let x = cx.ty(0)?;
        let target = dims_from_ints(&cx.const_ints(1, "shape")?.unwrap_or_default(), "shape")?;
        Ok(vec![TensorType::new(x.dtype, broadcast_shapes(&x.shape, &target)?)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let target = dims_from_ints(&input(inputs, 1)?.to_i64s()?, "shape")?;
        let out_shape = static_dims(&broadcast_shapes(&dims_of(x), &target)?).unwrap_or_default();
        let offs = broadcast_offsets(x.shape(), &out_shape);
        with_dtype!(x.dtype(), T => {
            let v = raw_view::<T>(x)?;
            Ok(vec![raw_tensor(x.dtype(), out_shape, offs.iter().map(|&o| v[o]).collect())?])
        })
    }
}

/// The input repeated `repeats[i]` times along each dim i (input 1, one count per dim, known at
/// compile time): `out[j] = in[j % in_dims]` per dim.
#[derive(Clone, Debug, PartialEq)]
pub struct Tile;

impl Tile {
    pub fn build(_: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::Tile(Tile))
    }

    fn repeats(r: &[i64], rank: usize) -> Result<Vec<usize>, OpError> {
        if r.len() != rank {
            invalid!("repeats {r:?} must have one count per input dim ({rank})");
        }
        r.iter().map(|&n| if n < 0 { invalid!("repeats {r:?} has a negative count") } else { Ok(n as usize) }).collect()
    }
}

impl OpDef for Tile {
    fn name(&self) -> &'static str {
        "Tile"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 2)?;
        let x = cx.ty(0)?;
        let reps = Tile::repeats(&cx.const_ints(1, "repeats")?.unwrap_or_default(), x.rank())?;
        let shape = x
            .shape
            .iter()
            .zip(&reps)
            .map(|(d, &n)| match (d, n) {
                (d, 1) => Ok(d.clone()),
                (_, 0) => Ok(Dim::Known(0)),
                (d, n) => {
                    let d = need_known(d, "a repeated dim")?;
                    d.checked_mul(n).map(Dim::Known).ok_or_else(|| OpError::Invalid("output is too large".into()))
                }
            })
            .collect::<Result<Shape, OpError>>()?;
        Ok(vec![TensorType::new(x.dtype, shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let xs = x.shape();
        let reps = Tile::repeats(&input(inputs, 1)?.to_i64s()?, xs.len())?;
        let out_shape: Vec<usize> = xs.iter().zip(&reps).map(|(d, n)| d * n).collect();
        let n: usize = out_shape.iter().product();
        let (xst, ost) = (strides_of(xs), strides_of(&out_shape));
        let offs: Vec<usize> =
            (0..n).map(|o| (0..xs.len()).map(|d| (o / ost[d] % out_shape[d]) % xs[d] * xst[d]).sum()).collect();
        with_dtype!(x.dtype(), T => {
            let v = raw_view::<T>(x)?;
            Ok(vec![raw_tensor(x.dtype(), out_shape, offs.iter().map(|&o| v[o]).collect())?])
        })
    }
}

/// Moves blocks of channels into spatial blocks. `DCR` (depth-column-row, the default) or `CRD`.
#[derive(Clone, Debug, PartialEq)]
pub struct DepthToSpace {
    pub blocksize: usize,
    pub crd: bool,
}

fn blocksize(a: &mut Attrs) -> Result<usize, OpError> {
    match a.opt_int("blocksize")? {
        Some(b) => Ok(crate::ops::conv::positive(vec![b], "blocksize")?[0]),
        None => invalid!("attribute 'blocksize' is required"),
    }
}

fn nchw(x: &TensorType) -> Result<[usize; 4], OpError> {
    if x.rank() != 4 {
        invalid!("input must be 4-D (NCHW), found {x}");
    }
    let c = need_known(&x.shape[1], "channel dim")?;
    let h = need_known(&x.shape[2], "height")?;
    let w = need_known(&x.shape[3], "width")?;
    Ok([0, c, h, w])
}

impl DepthToSpace {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let blocksize = blocksize(a)?;
        let crd = match a.string("mode", "DCR")?.as_str() {
            "DCR" => false,
            "CRD" => true,
            m => invalid!("unknown mode '{m}'"),
        };
        Ok(Op::DepthToSpace(DepthToSpace { blocksize, crd }))
    }
}

impl OpDef for DepthToSpace {
    fn name(&self) -> &'static str {
        "DepthToSpace"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 1)?;
        let x = cx.ty(0)?;
        let [_, c, h, w] = nchw(x)?;
        let b = self.blocksize;
        if c % (b * b) != 0 {
            invalid!("{c} channels are not divisible by blocksize^2 = {}", b * b);
        }
        let shape = vec![x.shape[0].clone(), Dim::Known(c / (b * b)), Dim::Known(h * b), Dim::Known(w * b)];
        Ok(vec![TensorType::new(x.dtype, shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let &[n, c, h, w] = x.shape() else { invalid!("input must be 4-D") };
        let b = self.blocksize;
        let cb = c / (b * b);
        let (split, perm) = if self.crd {
            (vec![n, cb, b, b, h, w], [0, 1, 4, 2, 5, 3])
        } else {
            (vec![n, b, b, cb, h, w], [0, 3, 4, 1, 5, 2])
        };
        let t = transpose_tensor(&x.reshaped(split)?, &perm)?;
        Ok(vec![t.reshaped(vec![n, cb, h * b, w * b])?])
    }
    fn attrs(&self) -> AttrList {
        vec![
            ("blocksize", AttrValue::Int(self.blocksize as i64)),
            ("mode", AttrValue::Str(if self.crd { "CRD" } else { "DCR" }.into())),
        ]
    }
}

/// Moves spatial blocks into channels (the inverse of DCR DepthToSpace).
#[derive(Clone, Debug, PartialEq)]
pub struct SpaceToDepth {
    pub blocksize: usize,
}

impl SpaceToDepth {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::SpaceToDepth(SpaceToDepth { blocksize: blocksize(a)? }))
    }
}

impl OpDef for SpaceToDepth {
    fn name(&self) -> &'static str {
        "SpaceToDepth"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 1)?;
        let x = cx.ty(0)?;
        let [_, c, h, w] = nchw(x)?;
        let b = self.blocksize;
        if h % b != 0 || w % b != 0 {
            invalid!("spatial size {h}x{w} is not divisible by blocksize {b}");
        }
        let Some(cout) = b.checked_mul(b).and_then(|bb| bb.checked_mul(c)) else {
            invalid!("{c} channels times blocksize^2 ({b}^2) overflow");
        };
        let shape = vec![x.shape[0].clone(), Dim::Known(cout), Dim::Known(h / b), Dim::Known(w / b)];
        Ok(vec![TensorType::new(x.dtype, shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let &[n, c, h, w] = x.shape() else { invalid!("input must be 4-D") };
        let b = self.blocksize;
        let t = transpose_tensor(&x.reshaped(vec![n, c, h / b, b, w / b, b])?, &[0, 3, 5, 1, 2, 4])?;
        Ok(vec![t.reshaped(vec![n, c * b * b, h / b, w / b])?])
    }
    fn attrs(&self) -> AttrList {
        vec![("blocksize", AttrValue::Int(self.blocksize as i64))]
    }
}
