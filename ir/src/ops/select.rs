//! Ops that pick elements by their order along an axis: ArgMax, ArgMin and TopK.
//!
//! The order is the one the ONNX reference implements: NaN counts as larger than every number
//! (np.argmax returns the first NaN; TopK's reference sorts NaN to the top of the largest), and
//! equal values keep their index order.

use std::cmp::Ordering;

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::ops::{InferCx, Op, OpDef, input, norm_axis, raw_tensor};
use crate::shape::{Dim, TensorType};
use crate::tensor::{Element, Tensor};
use crate::with_numeric;

/// Compares two elements, NaN above every number and equal to another NaN.
fn order<T: PartialOrd>(a: T, b: T) -> Ordering {
    #[allow(clippy::eq_op)]
    match (a != a, b != b) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

fn numeric(x: &TensorType, op: &str) -> Result<(), OpError> {
    if x.dtype.is_int() || matches!(x.dtype, DType::F32 | DType::F64) {
        return Ok(());
    }
    Err(OpError::Unsupported(format!("{op} of {}", x.dtype)))
}

/// `[outer, len, inner]`: the input around `axis`.
pub fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

/// The index of the largest (ArgMax) or smallest (ArgMin) element along `axis`, as i64: the first
/// such element, or the last with `select_last_index`. The axis is kept as 1 with `keepdims`.
/// After inference `axis` is non-negative.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgReduce {
    pub max: bool,
    pub axis: i64,
    pub keepdims: bool,
    pub select_last_index: bool,
}

impl ArgReduce {
    pub fn build(max: bool, a: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::ArgReduce(ArgReduce {
            max,
            axis: a.int("axis", 0)?,
            keepdims: a.int("keepdims", 1)? != 0,
            select_last_index: a.int("select_last_index", 0)? != 0,
        }))
    }

    /// Whether `v` replaces the current pick `best` (seen earlier along the axis).
    pub fn replaces<T: PartialOrd + Copy>(&self, v: T, best: T) -> bool {
        let o = order(v, best);
        let o = if self.max { o } else { o.reverse() };
        o == Ordering::Greater || (self.select_last_index && o == Ordering::Equal)
    }

    fn run<T: Element>(&self, x: &Tensor, axis: usize) -> Result<Vec<i64>, OpError> {
        let v = x.view::<T>()?;
        let (outer, len, inner) = split_at_axis(x.shape(), axis);
        let mut out = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| v[(o * len + j) * inner + i];
                let mut best = 0;
                for j in 1..len {
                    if self.replaces(at(j), at(best)) {
                        best = j;
                    }
                }
                out.push(best as i64);
            }
        }
        Ok(out)
    }
}

impl OpDef for ArgReduce {
    fn name(&self) -> &'static str {
        if self.max { "ArgMax" } else { "ArgMin" }
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 1)?;
        let x = cx.ty(0)?;
        numeric(x, self.name())?;
        let axis = norm_axis(self.axis, x.rank())?;
        self.axis = axis as i64;
        if x.shape[axis] == Dim::Known(0) {
            invalid!("cannot pick from an empty axis {axis} of {x}");
        }
        let mut shape = x.shape.clone();
        if self.keepdims {
            shape[axis] = Dim::Known(1);
        } else {
            shape.remove(axis);
        }
        Ok(vec![TensorType::new(DType::I64, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let axis = norm_axis(self.axis, x.rank())?;
        if x.shape()[axis] == 0 {
            invalid!("cannot pick from an empty axis {axis}");
        }
        let out = with_numeric!(x.dtype(), T => self.run::<T>(x, axis))?;
        let mut shape = x.shape().to_vec();
        if self.keepdims {
            shape[axis] = 1;
        } else {
            shape.remove(axis);
        }
        Ok(vec![Tensor::from_vec(shape, out)])
    }

    fn attrs(&self) -> AttrList {
        vec![
            ("axis", AttrValue::Int(self.axis)),
            ("keepdims", AttrValue::Int(self.keepdims as i64)),
            ("select_last_index", AttrValue::Int(self.select_last_index as i64)),
        ]
    }
}

/// The `k` largest (or smallest) elements along `axis` and their indices (i64), in order (best
/// first, equal values by index; `sorted = 0` leaves the order open, and incept sorts anyway).
/// `k` is input 1, known at compile time. After inference `axis` is non-negative.
#[derive(Clone, Debug, PartialEq)]
pub struct TopK {
    pub axis: i64,
    pub largest: bool,
    pub sorted: bool,
}

impl TopK {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::TopK(TopK {
            axis: a.int("axis", -1)?,
            largest: a.int("largest", 1)? != 0,
            sorted: a.int("sorted", 1)? != 0,
        }))
    }

    fn k(k: &[i64], len: Option<usize>) -> Result<usize, OpError> {
        let [k] = k[..] else { invalid!("K must hold one value, found {k:?}") };
        if k < 0 {
            invalid!("K = {k} is negative");
        }
        if let Some(len) = len
            && k as usize > len
        {
            invalid!("K = {k} is larger than the axis ({len})");
        }
        Ok(k as usize)
    }

    /// The output order of element `a` (at index `ia`) against element `b` (at `ib`).
    pub fn cmp<T: PartialOrd + Copy>(&self, a: T, ia: usize, b: T, ib: usize) -> Ordering {
        let o = order(a, b);
        let o = if self.largest { o.reverse() } else { o };
        o.then(ia.cmp(&ib))
    }

    fn run<T: Element>(&self, x: &Tensor, axis: usize, k: usize) -> Result<(Vec<T>, Vec<i64>), OpError> {
        let v = x.view::<T>()?;
        let (outer, len, inner) = split_at_axis(x.shape(), axis);
        let (mut vals, mut idx) = (vec![T::default(); outer * k * inner], vec![0i64; outer * k * inner]);
        let mut order: Vec<usize> = Vec::with_capacity(len);
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| v[(o * len + j) * inner + i];
                order.clear();
                order.extend(0..len);
                order.sort_by(|&a, &b| self.cmp(at(a), a, at(b), b));
                for (r, &j) in order[..k].iter().enumerate() {
                    let p = (o * k + r) * inner + i;
                    vals[p] = at(j);
                    idx[p] = j as i64;
                }
            }
        }
        Ok((vals, idx))
    }
}

impl OpDef for TopK {
    fn name(&self) -> &'static str {
        "TopK"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 2)?;
        let x = cx.ty(0)?;
        numeric(x, "TopK")?;
        let axis = norm_axis(self.axis, x.rank())?;
        self.axis = axis as i64;
        let k = cx.const_ints(1, "K")?.unwrap_or_default();
        let k = TopK::k(&k, x.shape[axis].known())?;
        let mut shape = x.shape.clone();
        shape[axis] = Dim::Known(k);
        Ok(vec![TensorType::new(x.dtype, shape.clone()), TensorType::new(DType::I64, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let axis = norm_axis(self.axis, x.rank())?;
        let k = TopK::k(&input(inputs, 1)?.to_i64s()?, Some(x.shape()[axis]))?;
        let mut shape = x.shape().to_vec();
        shape[axis] = k;
        with_numeric!(x.dtype(), T => {
            let (vals, idx) = self.run::<T>(x, axis, k)?;
            Ok(vec![raw_tensor(x.dtype(), shape.clone(), vals)?, Tensor::from_vec(shape, idx)])
        })
    }

    fn attrs(&self) -> AttrList {
        vec![
            ("axis", AttrValue::Int(self.axis)),
            ("largest", AttrValue::Int(self.largest as i64)),
            ("sorted", AttrValue::Int(self.sorted as i64)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(max: bool, last: bool, v: &[f32]) -> i64 {
        let op = ArgReduce { max, axis: 0, keepdims: false, select_last_index: last };
        let x = Tensor::from_vec(vec![v.len()], v.to_vec());
        op.eval(&[Some(&x)]).unwrap()[0].to_i64s().unwrap()[0]
    }

    fn top(largest: bool, k: i64, v: &[f32]) -> (Vec<f64>, Vec<i64>) {
        let op = TopK { axis: 0, largest, sorted: true };
        let x = Tensor::from_vec(vec![v.len()], v.to_vec());
        let k = Tensor::from_vec(vec![1], vec![k]);
        let out = op.eval(&[Some(&x), Some(&k)]).unwrap();
        (out[0].to_f64s().unwrap(), out[1].to_i64s().unwrap())
    }

    #[test]
    fn nan_is_above_every_number_and_ties_go_by_index() {
        let nan = f32::NAN;
        assert_eq!(arg(true, false, &[1.0, nan, 3.0, nan]), 1);
        assert_eq!(arg(true, true, &[1.0, nan, 3.0, nan]), 3);
        assert_eq!(arg(false, false, &[2.0, nan, 0.0, 0.0]), 2);
        assert_eq!(arg(false, true, &[2.0, nan, 0.0, 0.0]), 3);
        assert_eq!(arg(false, false, &[nan, nan]), 0);
        let (v, i) = top(true, 2, &[1.0, nan, 3.0]);
        assert!(v[0].is_nan() && v[1] == 3.0 && i == [1, 2]);
        let (v, i) = top(false, 3, &[1.0, nan, 3.0]);
        assert!(v[0] == 1.0 && v[1] == 3.0 && v[2].is_nan() && i == [0, 2, 1]);
        // Equal values keep their index order, largest or smallest.
        assert_eq!(top(true, 3, &[5.0, 7.0, 5.0, 7.0]).1, [1, 3, 0]);
        assert_eq!(top(false, 3, &[5.0, 7.0, 5.0, 7.0]).1, [0, 2, 1]);
    }
}
