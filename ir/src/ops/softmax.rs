//! Softmax and LogSoftmax.

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::error::OpError;
use crate::ops::conv::from_f64;
use crate::ops::{InferCx, Op, OpDef, expect_float, input, norm_axis};
use crate::shape::TensorType;
use crate::tensor::Tensor;

/// Softmax (or its log) along `axis`. With `coerce_2d` (the semantics before opset 13) the input is
/// viewed as a matrix `[prod(dims < axis), prod(dims >= axis)]` and each row is normalised; shape
/// inference clears the flag when the two agree (axis is the last dim).
#[derive(Clone, Debug, PartialEq)]
pub struct Softmax {
    pub axis: i64,
    pub log: bool,
    pub coerce_2d: bool,
}

impl Softmax {
    pub fn build(log: bool, a: &mut Attrs) -> Result<Op, OpError> {
        let axis = a.int("axis", -1)?;
        let coerce_2d = a.int("coerce_2d", 0)? != 0;
        Ok(Op::Softmax(Softmax { axis, log, coerce_2d }))
    }
}

impl OpDef for Softmax {
    fn name(&self) -> &'static str {
        if self.log { "LogSoftmax" } else { "Softmax" }
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 1)?;
        let x = cx.ty(0)?;
        expect_float(x, "input")?;
        let axis = norm_axis(self.axis, x.rank())?;
        self.axis = axis as i64;
        if axis + 1 == x.rank() {
            self.coerce_2d = false;
        }
        Ok(vec![x.clone()])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let xs = x.shape();
        let axis = norm_axis(self.axis, xs.len())?;
        // Normalise groups of `len` elements that are `stride` apart.
        let (outer, len, stride) = if self.coerce_2d {
            (xs[..axis].iter().product::<usize>(), xs[axis..].iter().product::<usize>(), 1)
        } else {
            let inner: usize = xs[axis + 1..].iter().product();
            (xs[..axis].iter().product::<usize>() * inner, xs[axis], inner)
        };
        let xv = x.to_f64s()?;
        let mut out = vec![0f64; xv.len()];
        for o in 0..outer {
            let base = if self.coerce_2d || stride == 1 { o * len } else { (o / stride) * len * stride + o % stride };
            let at = |k: usize| base + k * stride;
            let max = (0..len).map(|k| xv[at(k)]).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = (0..len).map(|k| (xv[at(k)] - max).exp()).sum();
            for k in 0..len {
                let z = xv[at(k)] - max;
                out[at(k)] = if self.log { z - sum.ln() } else { z.exp() / sum };
            }
        }
        Ok(vec![from_f64(x.dtype(), xs.to_vec(), out)])
    }

    fn attrs(&self) -> AttrList {
        let mut a = vec![("axis", AttrValue::Int(self.axis))];
        if self.coerce_2d {
            a.push(("coerce_2d", AttrValue::Int(1)));
        }
        a
    }
}
