//! The Reduce ops: Sum, Mean, Max, Min, Prod, L1, L2, SumSquare, LogSum and LogSumExp.

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
    Min,
    Prod,
    L1,
    L2,
    SumSquare,
    LogSum,
    /// `ln(sum(exp(x - m))) + m`, `m` the largest element (or 0 when that is infinite), so that
    /// large inputs do not overflow.
    LogSumExp,
}

impl ReduceKind {
    pub const ALL: [ReduceKind; 10] = [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::Prod,
        ReduceKind::L1,
        ReduceKind::L2,
        ReduceKind::SumSquare,
        ReduceKind::LogSum,
        ReduceKind::LogSumExp,
    ];

    /// Whether reducing a group of axes in parts (the last run of adjacent axes first, then the
    /// next) gives the same result as one pass over them all.
    pub fn splits(self) -> bool {
        matches!(self, ReduceKind::Sum | ReduceKind::Mean | ReduceKind::Prod)
    }

    /// The value the accumulator starts from (Max and Min start from the first element).
    pub fn init(self) -> f64 {
        match self {
            ReduceKind::Max => f64::NEG_INFINITY,
            ReduceKind::Min => f64::INFINITY,
            ReduceKind::Prod => 1.0,
            _ => 0.0,
        }
    }
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
            ReduceKind::Min => "ReduceMin",
            ReduceKind::Prod => "ReduceProd",
            ReduceKind::L1 => "ReduceL1",
            ReduceKind::L2 => "ReduceL2",
            ReduceKind::SumSquare => "ReduceSumSquare",
            ReduceKind::LogSum => "ReduceLogSum",
            ReduceKind::LogSumExp => "ReduceLogSumExp",
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
        let xv = x.to_f64s()?;
        let out_of = |idx: &[usize]| -> usize {
            idx.iter().zip(&mask).zip(&kstrides).map(|((&v, &r), &s)| if r { 0 } else { v * s }).sum()
        };
        // LogSumExp's shift: the largest element of each group.
        let mut shift = vec![0f64; n_out];
        if self.kind == ReduceKind::LogSumExp {
            let mut m = vec![f64::NEG_INFINITY; n_out];
            let mut i = 0;
            crate::ops::for_each_index(xs, |idx| {
                let o = out_of(idx);
                m[o] = m[o].max(xv[i]);
                i += 1;
            });
            shift = m.into_iter().map(|v| if v.is_finite() { v } else { 0.0 }).collect();
        }
        let mut acc = vec![self.kind.init(); n_out];
        let mut seen = vec![false; n_out];
        let mut i = 0;
        crate::ops::for_each_index(xs, |idx| {
            let o = out_of(idx);
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
                ReduceKind::Min => {
                    if !seen[o] || v < acc[o] {
                        acc[o] = v;
                        seen[o] = true;
                    }
                }
                ReduceKind::Prod => acc[o] *= v,
                ReduceKind::L1 => acc[o] += v.abs(),
                ReduceKind::L2 | ReduceKind::SumSquare => acc[o] += v * v,
                ReduceKind::LogSumExp => acc[o] += (v - shift[o]).exp(),
                ReduceKind::Sum | ReduceKind::Mean | ReduceKind::LogSum => acc[o] += v,
            }
        });
        for (a, s) in acc.iter_mut().zip(&shift) {
            *a = match self.kind {
                ReduceKind::Mean => *a / count as f64,
                ReduceKind::L2 => a.sqrt(),
                ReduceKind::LogSum => a.ln(),
                ReduceKind::LogSumExp => a.ln() + s,
                _ => *a,
            };
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
