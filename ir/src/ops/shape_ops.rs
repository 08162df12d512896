//! Ops that make shapes, indices and filled tensors: Shape, Gather, ConstantOfShape, Range.

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::ops::{InferCx, Op, OpDef, input, norm_axis, raw_tensor, raw_view};
use crate::shape::{Dim, TensorType, known_shape};
use crate::tensor::{Tensor, checked_numel};
use crate::with_dtype;

/// The shape of the input as a 1-D i64 tensor, optionally the dims `[start, end)`.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeOf {
    pub start: i64,
    pub end: Option<i64>,
}

impl ShapeOf {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::Shape(ShapeOf { start: a.int("start", 0)?, end: a.opt_int("end")? }))
    }

    fn range(&self, rank: usize) -> (usize, usize) {
        let r = rank as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let s = clamp(self.start);
        let e = clamp(self.end.unwrap_or(r));
        (s, e.max(s))
    }

    /// The output value, when the selected dims of the input are all known.
    pub fn value(&self, shape: &[Dim]) -> Option<Tensor> {
        let (s, e) = self.range(shape.len());
        let dims: Option<Vec<i64>> = shape[s..e].iter().map(|d| d.known().map(|v| v as i64)).collect();
        dims.map(|d| Tensor::from_vec(vec![d.len()], d))
    }
}

impl OpDef for ShapeOf {
    fn name(&self) -> &'static str {
        "Shape"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 1)?;
        let (s, e) = self.range(cx.ty(0)?.rank());
        Ok(vec![TensorType::known(DType::I64, &[e - s])])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        Ok(vec![self.value(&known_shape(x.shape())).ok_or_else(|| OpError::Invalid("shape".into()))?])
    }
    fn attrs(&self) -> AttrList {
        let mut a = vec![];
        if self.start != 0 {
            a.push(("start", AttrValue::Int(self.start)));
        }
        if let Some(e) = self.end {
            a.push(("end", AttrValue::Int(e)));
        }
        a
    }
}

/// Picks entries along an axis by integer indices (negative ones count from the end).
#[derive(Clone, Debug, PartialEq)]
pub struct Gather {
    pub axis: i64,
}

impl Gather {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::Gather(Gather { axis: a.int("axis", 0)? }))
    }
}

impl OpDef for Gather {
    fn name(&self) -> &'static str {
        "Gather"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 2)?;
        let (x, idx) = (cx.ty(0)?, cx.ty(1)?);
        if !matches!(idx.dtype, DType::I32 | DType::I64) {
            invalid!("indices must be i32 or i64, found {}", idx.dtype);
        }
        let axis = norm_axis(self.axis, x.rank())?;
        self.axis = axis as i64;
        if let (Some(v), Some(d)) = (cx.value(1), x.shape[axis].known()) {
            check_indices(&v.to_i64s()?, d)?;
        }
        let mut shape = x.shape[..axis].to_vec();
        shape.extend(idx.shape.iter().cloned());
        shape.extend(x.shape[axis + 1..].iter().cloned());
        Ok(vec![TensorType::new(x.dtype, shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, idx) = (input(inputs, 0)?, input(inputs, 1)?);
        let axis = norm_axis(self.axis, x.rank())?;
        let xs = x.shape();
        let d = xs[axis];
        let ids = check_indices(&idx.to_i64s()?, d)?;
        let outer: usize = xs[..axis].iter().product();
        let inner: usize = xs[axis + 1..].iter().product();
        let mut shape = xs[..axis].to_vec();
        shape.extend_from_slice(idx.shape());
        shape.extend_from_slice(&xs[axis + 1..]);
        with_dtype!(x.dtype(), T => {
            let v = raw_view::<T>(x)?;
            let mut out = Vec::with_capacity(outer * ids.len() * inner);
            for o in 0..outer {
                for &i in &ids {
                    out.extend_from_slice(&v[(o * d + i) * inner..][..inner]);
                }
            }
            Ok(vec![raw_tensor(x.dtype(), shape, out)?])
        })
    }
    fn attrs(&self) -> AttrList {
        vec![("axis", AttrValue::Int(self.axis))]
    }
}

fn check_indices(ids: &[i64], d: usize) -> Result<Vec<usize>, OpError> {
    ids.iter()
        .map(|&i| {
            let j = if i < 0 { i + d as i64 } else { i };
            if j < 0 || j >= d as i64 {
                invalid!("index {i} is out of range for a dim of size {d}");
            }
            Ok(j as usize)
        })
        .collect()
}

fn shape_from(v: &[i64]) -> Result<Vec<usize>, OpError> {
    let dims: Vec<usize> = v
        .iter()
        .map(|&d| if d < 0 { Err(OpError::Invalid(format!("shape {v:?} has a negative dim"))) } else { Ok(d as usize) })
        .collect::<Result<_, _>>()?;
    checked_numel(&dims).ok_or_else(|| OpError::Invalid(format!("shape {v:?} is too large")))?;
    Ok(dims)
}

/// A tensor of the shape given by input 0, filled with `value` (one element; f32 0 by default).
#[derive(Clone, Debug)]
pub struct ConstantOfShape {
    pub value: Tensor,
}

impl ConstantOfShape {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let value = a.opt_tensor("value")?.unwrap_or_else(|| Tensor::from_vec(vec![1], vec![0f32]));
        if value.numel() != 1 {
            invalid!("value must have one element, found shape {:?}", value.shape());
        }
        Ok(Op::ConstantOfShape(ConstantOfShape { value }))
    }
}

impl OpDef for ConstantOfShape {
    fn name(&self) -> &'static str {
        "ConstantOfShape"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 1)?;
        let dims = shape_from(&cx.const_ints(0, "shape")?.unwrap_or_default())?;
        Ok(vec![TensorType::known(self.value.dtype(), &dims)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let dims = shape_from(&input(inputs, 0)?.to_i64s()?)?;
        let n: usize = dims.iter().product();
        with_dtype!(self.value.dtype(), T => {
            let v = raw_view::<T>(&self.value)?[0];
            Ok(vec![raw_tensor(self.value.dtype(), dims, vec![v; n])?])
        })
    }
    fn attrs(&self) -> AttrList {
        vec![("value", AttrValue::Tensor(self.value.clone()))]
    }
}

/// `start, start + delta, ...` up to `limit` (exclusive); the three scalars share a type.
#[derive(Clone, Debug, PartialEq)]
pub struct Range;

impl Range {
    pub fn build(_: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::Range(Range))
    }

    fn count(start: f64, limit: f64, delta: f64) -> Result<usize, OpError> {
        if delta == 0.0 {
            invalid!("delta must not be 0");
        }
        let n = ((limit - start) / delta).ceil().max(0.0);
        if !n.is_finite() || n > crate::tensor::MAX_ELEMENTS as f64 {
            invalid!("range of {n} elements is too large");
        }
        Ok(n as usize)
    }
}

impl OpDef for Range {
    fn name(&self) -> &'static str {
        "Range"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(3, 3)?;
        let t = cx.ty(0)?;
        for i in 0..3 {
            let ti = cx.ty(i)?;
            if ti.dtype != t.dtype || ti.numel() != Some(1) {
                invalid!("input {i} must be a scalar of type {}, found {ti}", t.dtype);
            }
        }
        if !matches!(t.dtype, DType::F32 | DType::F64 | DType::I16 | DType::I32 | DType::I64) {
            return Err(OpError::Unsupported(format!("Range of {}", t.dtype)));
        }
        let v: Vec<f64> = (0..3)
            .map(|i| match cx.value(i) {
                Some(v) => Ok(v.to_f64s()?[0]),
                None => Err(OpError::DynamicShape("Range bounds are computed at run time".into())),
            })
            .collect::<Result<_, OpError>>()?;
        Ok(vec![TensorType::known(t.dtype, &[Range::count(v[0], v[1], v[2])?])])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let s = input(inputs, 0)?;
        crate::with_numeric!(s.dtype(), T => {
            use crate::ops::binary::Arith;
            let get = |i: usize| -> Result<T, OpError> { Ok(input(inputs, i)?.view::<T>()?[0]) };
            let (start, limit, delta) = (get(0)?, get(1)?, get(2)?);
            let n = Range::count(start.to_f64(), limit.to_f64(), delta.to_f64())?;
            // Repeated addition, as the ONNX reference does, so float ranges round the same way.
            let mut out = Vec::with_capacity(n);
            let mut v = start;
            for _ in 0..n {
                out.push(v);
                v = v.add(delta);
            }
            Ok(vec![Tensor::from_vec(vec![n], out)])
        })
    }
}
