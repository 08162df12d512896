//! Indexing by indices known only at run time: GatherND and ScatterND (the last dim of `indices`
//! holds `k` coordinates into the leading `k` dims of `data`; each tuple names a slice of the
//! remaining dims), and GatherElements (one index per output element).

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::ops::{InferCx, Op, OpDef, input, need_known, raw_tensor, raw_view};
use crate::shape::TensorType;
use crate::tensor::Tensor;
use crate::with_dtype;

/// The element offset of each index tuple's slice in `data`, and the slice length. Negative
/// coordinates count from the end; out-of-range ones are an error.
fn slices(data: &[usize], idx: &[i64], k: usize) -> Result<(Vec<usize>, usize), OpError> {
    if k == 0 || k > data.len() {
        invalid!("index tuples of length {k} do not fit data of rank {}", data.len());
    }
    let inner: usize = data[k..].iter().product();
    let mut offs = Vec::with_capacity(idx.len() / k);
    for t in idx.chunks(k) {
        let mut o = 0usize;
        for (d, &i) in t.iter().enumerate() {
            let n = data[d] as i64;
            let j = if i < 0 { i + n } else { i };
            if j < 0 || j >= n {
                invalid!("index {i} is out of range for dim {d} of size {n}");
            }
            o = o * data[d] + j as usize;
        }
        offs.push(o * inner);
    }
    Ok((offs, inner))
}

fn index_type(t: &TensorType) -> Result<(), OpError> {
    if t.dtype != DType::I64 {
        invalid!("indices must be i64, found {t}");
    }
    if t.rank() == 0 {
        invalid!("indices must have rank >= 1");
    }
    Ok(())
}

/// How ScatterND combines an update with the element it lands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

/// A copy of `data` with `updates` written at the index tuples (in order, so a repeated index
/// keeps the last update, or combines them with the reduction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScatterNd {
    pub reduction: Reduction,
}

impl ScatterNd {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let reduction = match a.string("reduction", "none")?.as_str() {
            "none" => Reduction::None,
            "add" => Reduction::Add,
            "mul" => Reduction::Mul,
            "max" => Reduction::Max,
            "min" => Reduction::Min,
            other => invalid!("unknown reduction '{other}'"),
        };
        Ok(Op::ScatterNd(ScatterNd { reduction }))
    }
}

impl OpDef for ScatterNd {
    fn name(&self) -> &'static str {
        "ScatterND"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(3, 3)?;
        let (x, idx, upd) = (cx.ty(0)?, cx.ty(1)?, cx.ty(2)?);
        index_type(idx)?;
        if upd.dtype != x.dtype {
            invalid!("updates {upd} must have the data's type {}", x.dtype);
        }
        let k = need_known(&idx.shape[idx.rank() - 1], "the index tuple length")?;
        if k > x.rank() {
            invalid!("index tuples of length {k} do not fit data {x}");
        }
        // updates: indices' leading dims, then data's dims after the first k.
        let mut want = idx.shape[..idx.rank() - 1].to_vec();
        want.extend_from_slice(&x.shape[k..]);
        if upd.shape != want {
            invalid!("updates {upd} must have shape {want:?} for data {x} and indices {idx}");
        }
        if self.reduction != Reduction::None && matches!(x.dtype, DType::Bool | DType::F16) {
            return Err(OpError::Unsupported(format!("ScatterND reduction on {}", x.dtype)));
        }
        Ok(vec![x.clone()])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, idx, upd) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let k = *idx.shape().last().unwrap_or(&0);
        let (offs, inner) = slices(x.shape(), &idx.to_i64s()?, k)?;
        if self.reduction == Reduction::None {
            return with_dtype!(x.dtype(), T => {
                let mut out = raw_view::<T>(x)?.into_owned();
                let u = raw_view::<T>(upd)?;
                for (n, &o) in offs.iter().enumerate() {
                    out[o..o + inner].copy_from_slice(&u[n * inner..(n + 1) * inner]);
                }
                Ok(vec![raw_tensor(x.dtype(), x.shape().to_vec(), out)?])
            });
        }
        use crate::ops::binary::Arith;
        let r = self.reduction;
        crate::with_numeric!(x.dtype(), T => {
            let mut out = x.view::<T>()?.into_owned();
            let u = upd.view::<T>()?;
            for (n, &o) in offs.iter().enumerate() {
                for i in 0..inner {
                    let (a, b) = (out[o + i], u[n * inner + i]);
                    out[o + i] = match r {
                        Reduction::Add => a.add(b),
                        Reduction::Mul => a.mul(b),
                        Reduction::Max => a.max_of(b),
                        Reduction::Min => a.min_of(b),
                        Reduction::None => b,
                    };
                }
            }
            Ok(vec![Tensor::from_vec(x.shape().to_vec(), out)])
        })
    }

    fn attrs(&self) -> AttrList {
        let r = match self.reduction {
            Reduction::None => return vec![],
            Reduction::Add => "add",
            Reduction::Mul => "mul",
            Reduction::Max => "max",
            Reduction::Min => "min",
        };
        vec![("reduction", AttrValue::Str(r.into()))]
    }
}

/// The slices of `data` at the index tuples, stacked in the shape of the indices' leading dims.
/// Only `batch_dims = 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatherNd;

impl GatherNd {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let b = a.int("batch_dims", 0)?;
        if b != 0 {
            return Err(OpError::Unsupported(format!("GatherND with batch_dims = {b}")));
        }
        Ok(Op::GatherNd(GatherNd))
    }
}

impl OpDef for GatherNd {
    fn name(&self) -> &'static str {
        "GatherND"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 2)?;
        let (x, idx) = (cx.ty(0)?, cx.ty(1)?);
        index_type(idx)?;
        let k = need_known(&idx.shape[idx.rank() - 1], "the index tuple length")?;
        if k == 0 || k > x.rank() {
            invalid!("index tuples of length {k} do not fit data {x}");
        }
        let mut shape = idx.shape[..idx.rank() - 1].to_vec();
        shape.extend_from_slice(&x.shape[k..]);
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, idx) = (input(inputs, 0)?, input(inputs, 1)?);
        let k = *idx.shape().last().unwrap_or(&0);
        let (offs, inner) = slices(x.shape(), &idx.to_i64s()?, k)?;
        let mut shape = idx.shape()[..idx.rank() - 1].to_vec();
        shape.extend_from_slice(&x.shape()[k..]);
        with_dtype!(x.dtype(), T => {
            let v = raw_view::<T>(x)?;
            let mut out = Vec::with_capacity(offs.len() * inner);
            for &o in &offs {
                out.extend_from_slice(&v[o..o + inner]);
            }
            Ok(vec![raw_tensor(x.dtype(), shape, out)?])
        })
    }
}

/// `out[p] = data[p with p[axis] replaced by indices[p]]` for every position p of `indices` (i32
/// or i64, the rank of data, each dim at most data's except along `axis`). Negative indices count
/// from the end; out-of-range ones are an error. After inference `axis` is non-negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatherElements {
    pub axis: i64,
}

impl GatherElements {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::GatherElements(GatherElements { axis: a.int("axis", 0)? }))
    }

    /// The data offset each output element reads, given the (in-range) index values.
    pub fn offsets(data: &[usize], idx_shape: &[usize], idx: &[i64], axis: usize) -> Result<Vec<usize>, OpError> {
        let (ds, is) = (crate::ops::strides_of(data), crate::ops::strides_of(idx_shape));
        let n = data[axis] as i64;
        idx.iter()
            .enumerate()
            .map(|(p, &i)| {
                let j = if i < 0 { i + n } else { i };
                if j < 0 || j >= n {
                    invalid!("index {i} is out of range for axis {axis} of size {n}");
                }
                Ok((0..data.len()).map(|d| if d == axis { j as usize } else { p / is[d] % idx_shape[d] } * ds[d]).sum())
            })
            .collect()
    }
}

impl OpDef for GatherElements {
    fn name(&self) -> &'static str {
        "GatherElements"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 2)?;
        let (x, idx) = (cx.ty(0)?, cx.ty(1)?);
        if !matches!(idx.dtype, DType::I64 | DType::I32) {
            invalid!("indices must be i32 or i64, found {idx}");
        }
        if idx.rank() != x.rank() || x.rank() == 0 {
            invalid!("indices {idx} must have the rank of data {x} (at least 1)");
        }
        let axis = crate::ops::norm_axis(self.axis, x.rank())?;
        self.axis = axis as i64;
        for (d, (a, b)) in x.shape.iter().zip(&idx.shape).enumerate() {
            if let (Some(a), Some(b)) = (a.known(), b.known())
                && d != axis
                && b > a
            {
                invalid!("indices {idx} are larger than data {x} in dim {d}");
            }
        }
        Ok(vec![TensorType::new(x.dtype, idx.shape.clone())])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, idx) = (input(inputs, 0)?, input(inputs, 1)?);
        let axis = crate::ops::norm_axis(self.axis, x.rank())?;
        if idx.rank() != x.rank() || x.shape().iter().zip(idx.shape()).enumerate().any(|(d, (a, b))| d != axis && b > a)
        {
            invalid!("indices {:?} do not fit data {:?}", idx.shape(), x.shape());
        }
        let offs = GatherElements::offsets(x.shape(), idx.shape(), &idx.to_i64s()?, axis)?;
        with_dtype!(x.dtype(), T => {
            let v = raw_view::<T>(x)?;
            Ok(vec![raw_tensor(x.dtype(), idx.shape().to_vec(), offs.iter().map(|&o| v[o]).collect())?])
        })
    }

    fn attrs(&self) -> AttrList {
        vec![("axis", AttrValue::Int(self.axis))]
    }
}
