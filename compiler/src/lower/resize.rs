//! Resize: one resampling pass per changed axis, with tap tables from the op's own plan.

use std::sync::Arc;

use incept_ir::DType;
use incept_ir::graph::{NodeId, ValueId};
use incept_ir::ops::resize::CoordMode;

use super::{LowerError, Lowerer};
use crate::codegen::kernels::resample::{ResampleSpec, ResizeTapsSpec};

impl<'g> Lowerer<'g> {
    /// Resize as one resampling step per changed axis, with tap tables from the op's own plan.
    pub(super) fn resize(&mut self, id: NodeId, r: &incept_ir::ops::Resize) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        self.f32_only(id, x)?;
        let mut shape = self.shape(x)?;
        let konst = |i: usize, what: &str| -> Result<Option<incept_ir::Tensor>, LowerError> {
            match self.in_val(id, i) {
                None => Ok(None),
                Some(v) => match self.konst(v) {
                    Some(t) => Ok(Some(t.into_owned())),
                    None => Err(self.unsupported(id, format!("{what} computed at run time"))),
                },
            }
        };
        let err = |e: &dyn std::fmt::Display| self.unsupported(id, e.to_string());
        // The region of interest matters to tf_crop_and_resize only. Given at run time, it
        // leaves the passes' shapes alone, and the tap tables of the axes it covers are computed
        // by a kernel (see `ResizeTapsSpec`).
        let roi_in = if r.coord == CoordMode::TfCropAndResize { self.in_val(id, 1) } else { None };
        let runtime_roi = roi_in.filter(|&v| !self.is_konst(v));
        let roi = match roi_in {
            Some(_) if runtime_roi.is_none() => {
                konst(1, "a region of interest")?.map(|t| t.to_f64s()).transpose().map_err(|e| err(&e))?
            }
            _ => None,
        };
        let scales = konst(2, "scales")?.map(|t| t.to_f64s()).transpose().map_err(|e| err(&e))?;
        let sizes = konst(3, "sizes")?.map(|t| t.to_i64s()).transpose().map_err(|e| err(&e))?;
        let passes = r.passes(&shape, roi.as_deref(), scales.as_deref(), sizes.as_deref()).map_err(|e| err(&e))?;
        let out = ValueId::new(id, 0);
        let mut cur = self.value(x)?;
        if passes.is_empty() {
            self.values.insert(out, cur);
            return Ok(());
        }
        let n = passes.len();
        let rank = shape.len();
        for (k, p) in passes.into_iter().enumerate() {
            let outer: usize = shape[..p.axis].iter().product();
            let inner: usize = shape[p.axis + 1..].iter().product();
            let at = match runtime_roi {
                Some(v) => {
                    let len = self.shape(v)?.iter().product();
                    r.roi_index(rank, p.axis, len).map_err(|e| self.unsupported(id, e.to_string()))?.map(|at| (v, at))
                }
                None => None,
            };
            let (offs, wts, bias, taps) = match at {
                Some((v, roi_at)) => {
                    let roi_f64 = match self.g.ty(v).dtype {
                        DType::F32 => false,
                        DType::F64 => true,
                        other => return Err(self.unsupported(id, format!("a region of interest of {other}"))),
                    };
                    let spec = ResizeTapsSpec {
                        resize: r.clone(),
                        d_in: p.d_in,
                        d_out: p.d_out,
                        scale: p.scale,
                        inner,
                        taps: 0,
                        roi_f64,
                        roi_at,
                    };
                    let taps = spec.window().1;
                    self.unrolled_taps(id, taps)?;
                    let spec = ResizeTapsSpec { taps, ..spec };
                    let src = self.value(v)?;
                    let offs = self.scratch((p.d_out * taps * 8).max(8), &format!("{name}.taps{k}"));
                    let wts = self.scratch((p.d_out * taps * 4).max(4), &format!("{name}.weights{k}"));
                    let bias = self.scratch((p.d_out * 4).max(4), &format!("{name}.bias{k}"));
                    self.step(Arc::new(spec), p.d_out, &[src], &[offs, wts, bias], false, &name, "ResizeTaps", 0);
                    (offs, wts, bias, taps)
                }
                None => {
                    let taps = p.taps.iter().map(|t| t.as_ref().map_or(0, Vec::len)).max().unwrap_or(0);
                    self.unrolled_taps(id, taps)?;
                    let (mut offs, mut wts, mut bias) = (vec![], vec![], vec![]);
                    for t in &p.taps {
                        let t = t.as_deref().unwrap_or(&[]);
                        for k in 0..taps {
                            let (i, w) = t.get(k).copied().unwrap_or((0, 0.0));
                            offs.extend_from_slice(&((i * inner * 4) as i64).to_le_bytes());
                            wts.push(w as f32);
                        }
                        bias.push(if t.is_empty() { r.extrapolation_value } else { -0.0 });
                    }
                    let offs = self.weight(&offs, &format!("{name}.taps{k}"));
                    let wts = self.weight_f32(&wts, &format!("{name}.weights{k}"));
                    let bias = self.weight_f32(&bias, &format!("{name}.bias{k}"));
                    (offs, wts, bias, taps)
                }
            };
            shape[p.axis] = p.d_out;
            let dst = if k + 1 == n {
                self.define(out)?
            } else {
                let bytes = shape.iter().product::<usize>() * 4;
                self.scratch(bytes.max(4), &format!("{name}.pass{k}"))
            };
            let spec = ResampleSpec { outer, d_in: p.d_in, d_out: p.d_out, inner, taps };
            let tiles = spec.tiles();
            let flops = (tiles * inner * taps * 2) as u64;
            self.step(Arc::new(spec), tiles, &[cur, offs, wts, bias], &[dst], false, &name, "Resize", flops);
            cur = dst;
        }
        Ok(())
    }
}
