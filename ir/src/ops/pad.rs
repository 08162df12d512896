//! Pad: constant, reflect, edge and wrap modes; negative pads crop.

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::error::OpError;
use crate::invalid;
use crate::ops::{InferCx, Op, OpDef, input, need_known, norm_axis, opt_input, raw_tensor, raw_view, strides_of};
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;
use crate::with_dtype;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

impl PadMode {
    fn name(self) -> &'static str {
        match self {
            PadMode::Constant => "constant",
            PadMode::Reflect => "reflect",
            PadMode::Edge => "edge",
            PadMode::Wrap => "wrap",
        }
    }
}

/// Pads by input 1 (`[begin..., end...]` over all dims, or over the dims in input 3), filling with
/// input 2 (default 0) in constant mode. Before opset 11 pads and value were attributes; the
/// importer turns them into constant inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Pad {
    pub mode: PadMode,
}

impl Pad {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let mode = match a.string("mode", "constant")?.as_str() {
            "constant" => PadMode::Constant,
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            "wrap" => PadMode::Wrap,
            m => invalid!("unknown mode '{m}'"),
        };
        Ok(Op::Pad(Pad { mode }))
    }

    /// Begin and end pads for every dim.
    pub fn full_pads(rank: usize, pads: &[i64], axes: Option<&[i64]>) -> Result<Vec<(i64, i64)>, OpError> {
        let axes: Vec<usize> = match axes {
            Some(a) => a.iter().map(|&x| norm_axis(x, rank)).collect::<Result<_, _>>()?,
            None => (0..rank).collect(),
        };
        if pads.len() != 2 * axes.len() {
            invalid!("pads has {} entries, expected {} (2 per padded axis)", pads.len(), 2 * axes.len());
        }
        let limit = crate::ops::conv::MAX_ATTR;
        if let Some(p) = pads.iter().find(|p| p.unsigned_abs() > limit as u64) {
            invalid!("pad {p} is beyond 2^31");
        }
        let mut out = vec![(0, 0); rank];
        for (i, &ax) in axes.iter().enumerate() {
            out[ax] = (pads[i], pads[axes.len() + i]);
        }
        Ok(out)
    }
}

impl Pad {
    /// Where output index `o` of an axis of length `d` padded by `before` reads from, or `None`
    /// for the constant fill.
    pub fn source(&self, d: usize, before: i64, o: usize) -> Option<usize> {
        let d = d as i64;
        let i = o as i64 - before;
        if (0..d).contains(&i) {
            return Some(i as usize);
        }
        match self.mode {
            PadMode::Constant => None,
            PadMode::Edge => Some(i.clamp(0, d - 1) as usize),
            PadMode::Wrap => Some(i.rem_euclid(d) as usize),
            PadMode::Reflect => {
                if d == 1 {
                    return Some(0);
                }
                let period = 2 * (d - 1);
                let m = i.rem_euclid(period);
                Some(if m < d { m } else { period - m } as usize)
            }
        }
    }
}

impl OpDef for Pad {
    fn name(&self) -> &'static str {
        "Pad"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 4)?;
        let x = cx.ty(0)?;
        let pads = cx.const_ints(1, "pads")?.unwrap_or_default();
        let axes = cx.const_ints(3, "axes")?;
        if let Some(v) = cx.opt_ty(2)
            && (v.dtype != x.dtype || v.numel() != Some(1))
        {
            invalid!("constant_value {v} must be one element of the input's type {}", x.dtype);
        }
        let pads = Pad::full_pads(x.rank(), &pads, axes.as_deref())?;
        let shape = x
            .shape
            .iter()
            .zip(&pads)
            .enumerate()
            .map(|(k, (d, &(b, e)))| {
                if b == 0 && e == 0 {
                    return Ok(d.clone());
                }
                let n = need_known(d, &format!("padded dim {k}"))? as i64;
                let out = n + b + e;
                if out < 0 {
                    invalid!("pads {b}, {e} remove more than dim {k} of size {n}");
                }
                if self.mode != PadMode::Constant && n == 0 && out > 0 {
                    invalid!("{} padding of an empty dim {k}", self.mode.name());
                }
                Ok(Dim::Known(out as usize))
            })
            .collect::<Result<_, OpError>>()?;
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let pads = input(inputs, 1)?.to_i64s()?;
        let axes = opt_input(inputs, 3).map(|a| a.to_i64s()).transpose()?;
        let pads = Pad::full_pads(x.rank(), &pads, axes.as_deref())?;
        let xs = x.shape();
        let out_shape: Vec<usize> =
            xs.iter().zip(&pads).map(|(&d, &(b, e))| (d as i64 + b + e).max(0) as usize).collect();
        let strides = strides_of(xs);
        let source = |k: usize, o: usize| self.source(xs[k], pads[k].0, o);
        with_dtype!(x.dtype(), T => {
            let v = raw_view::<T>(x)?;
            let fill: T = match opt_input(inputs, 2) {
                Some(c) => raw_view::<T>(c)?.first().copied().unwrap_or_default(),
                None => T::default(),
            };
            let mut out = Vec::with_capacity(out_shape.iter().product());
            crate::ops::for_each_index(&out_shape, |idx| {
                let mut off = 0;
                for (k, &o) in idx.iter().enumerate() {
                    match source(k, o) {
                        Some(i) => off += i * strides[k],
                        None => {
                            out.push(fill);
                            return;
                        }
                    }
                }
                out.push(v[off]);
            });
            Ok(vec![raw_tensor(x.dtype(), out_shape, out)?])
        })
    }

    fn attrs(&self) -> AttrList {
        vec![("mode", AttrValue::Str(self.mode.name().into()))]
    }
}
