//! ReduceMean, ReduceMax and ReduceSum.

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::error::OpError;
use crate::ops::conv::from_f64;
use crate::ops::{InferCx, Op, OpDef, expect_float, input, norm_axis, opt_input, strides_of};
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    Mean,
    Max,
    Sum,
}

/// Reduces over the axes in input 1 (all axes when absent or empty, unless
/// `noop_with_empty_axes`). Before opset 18 (13 for ReduceSum) axes were an attribute; the importer
/// turns it into a constant input.
#[derive(Clone, Debug, PartialEq)]
pub struct Reduce {
    pub kind: ReduceKind,
    pub keepdims: bool,
    pub noop_with_empty_axes: bool,
}

impl Reduce {
    pub fn build(kind: ReduceKind, a: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::Reduce(Reduce {
            kind,
            keepdims: a.int("keepdims", 1)? != 0,
            noop_with_empty_axes: a.int("noop_with_empty_axes", 0)? != 0,
        }))
    }

    /// Which axes are reduced; `None` means the op is the identity.
    /// Which axes are reduced, given input 1's values (`None` when absent); `None` means the
    /// op passes its input through unchanged.
    pub fn axes(&self, rank: usize, axes: Option<&[i64]>) -> Result<Option<Vec<bool>>, OpError> {
        match axes {
            Some(a) if !a.is_empty() => {
                let mut m = vec![false; rank];
                for &x in a {
                    m[norm_axis(x, rank)?] = true;
                }
                Ok(Some(m))
            }
            _ if self.noop_with_empty_axes => Ok(None),
            _ => Ok(Some(vec![true; rank])),
        }
    }

    fn out_shape(&self, shape: &[Dim], mask: &[bool]) -> Vec<Dim> {
        shape
            .iter()
            .zip(mask)
            .filter_map(|(d, &r)| match (r, self.keepdims) {
                (false, _) => Some(d.clone()),
                (true, true) => Some(Dim::Known(1)),
                (true, false) => None,
            })
            .collect()
    }
}

impl OpDef for Reduce {
    fn name(&self) -> &'static str {
        match self.kind {
            ReduceKind::Mean => "ReduceMean",
            ReduceKind::Max => "ReduceMax",
            ReduceKind::Sum => "ReduceSum",
        }
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 2)?;
        let x = cx.ty(0)?;
        expect_float(x, "input")?;
        let axes = cx.const_ints(1, "axes")?;
        Ok(vec![match self.axes(x.rank(), axes.as_deref())? {
            None => x.clone(),
            Some(mask) => TensorType::new(x.dtype, self.out_shape(&x.shape, &mask)),
        }])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let axes = opt_input(inputs, 1).map(|a| a.to_i64s()).transpose()?;
        let Some(mask) = self.axes(x.rank(), axes.as_deref())? else { return Ok(vec![x.clone()]) };
        let xs = x.shape();
        // Accumulate into the keepdims-shaped output.
        let kept: Vec<usize> = xs.iter().zip(&mask).map(|(&d, &r)| if r { 1 } else { d }).collect();
        let kstrides = strides_of(&kept);
        let n_out: usize = kept.iter().product();
        let count: usize = xs.iter().zip(&mask).filter(|(_, r)| **r).map(|(d, _)| *d).product();
        let init = match self.kind {
            ReduceKind::Max => f64::NEG_INFINITY,
            _ => 0.0,
        };
        let mut acc = vec![init; n_out];
        let mut seen = vec![false; n_out];
        let xv = x.to_f64s()?;
        let mut i = 0;
        crate::ops::for_each_index(xs, |idx| {
            let o: usize = idx.iter().zip(&mask).zip(&kstrides).map(|((&v, &r), &s)| if r { 0 } else { v * s }).sum();
            let v = xv[i];
            i += 1;
            match self.kind {
                // MaxPool's rule (see `Pool::eval`): the first element in row-major order, then
                // any strictly greater one, so a NaN wins only in first position.
                ReduceKind::Max => {
                    if !seen[o] || v > acc[o] {
                        acc[o] = v;
                        seen[o] = true;
                    }
                }
                _ => acc[o] += v,
            }
        });
        if self.kind == ReduceKind::Mean {
            acc.iter_mut().for_each(|a| *a /= count as f64);
        }
        let shape: Vec<usize> =
            self.out_shape(&crate::shape::known_shape(xs), &mask).iter().filter_map(Dim::known).collect();
        Ok(vec![from_f64(x.dtype(), shape, acc)])
    }

    fn attrs(&self) -> AttrList {
        let mut a = vec![("keepdims", AttrValue::Int(self.keepdims as i64))];
        if self.noop_with_empty_axes {
            a.push(("noop_with_empty_axes", AttrValue::Int(1)));
        }
        a
    }
}
