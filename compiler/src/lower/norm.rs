//! Normalisations: LayerNormalization and InstanceNormalization rows, BatchNormalization with
//! run-time parameters, LRN.

use std::sync::Arc;

use incept_ir::graph::{NodeId, ValueId};
use incept_ir::ops::{Activation, Binary, Unary};

use super::{BufRef, LowerError, Lowerer};
use crate::codegen::kernels::math::{Bin, KExpr};
use crate::codegen::kernels::norm::{LayerNormSpec, LrnSpec};

impl<'g> Lowerer<'g> {
    /// LayerNormalization on rows of the normalised dims; scale and bias become rows of `len`
    /// floats (a constant one broadcast into the weights, a computed one used as it is when it
    /// already has the normalised dims' size).
    pub(super) fn layer_norm(&mut self, id: NodeId, ln: &incept_ir::ops::LayerNorm) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        self.f32_only(id, x)?;
        let n_out = self.g.node(id).outputs.len();
        let stats = (1..n_out).any(|slot| self.g.is_used(ValueId::new(id, slot)));
        let xs = self.shape(x)?;
        let axis = ln.axis as usize;
        let (rows, len) = ln.rows(&xs);
        let row = |this: &mut Self, slot: usize, what: &str| -> Result<Option<BufRef>, LowerError> {
            let Some(v) = this.in_val(id, slot) else { return Ok(None) };
            this.f32_only(id, v)?;
            let ps = this.shape(v)?;
            if ps.iter().product::<usize>() == len {
                return this.value(v).map(Some);
            }
            let Some(t) = this.konst(v) else {
                return Err(this.unsupported(id, format!("a {what} that is broadcast and computed at run time")));
            };
            let vals = t.to_f64s().map_err(|e| this.unsupported(id, e.to_string()))?;
            let offs = incept_ir::ops::binary::broadcast_offsets(&ps, &xs[axis..]);
            let full: Vec<f32> = offs.iter().map(|&o| vals[o] as f32).collect();
            Ok(Some(this.weight_f32(&full, &format!("{name}.{what}"))))
        };
        let scale = row(self, 1, "scale")?.ok_or_else(|| self.unsupported(id, "a missing scale"))?;
        let bias = row(self, 2, "bias")?;
        let spec = LayerNormSpec { rows, len, epsilon: ln.epsilon, bias: bias.is_some(), stats, per_channel: None };
        let src = self.value(x)?;
        let mut writes = vec![self.define(ValueId::new(id, 0))?];
        if stats {
            // Both statistics are written whichever is read; an unread one gets a scratch buffer.
            for slot in 1..3 {
                let v = ValueId::new(id, slot);
                writes.push(if slot < n_out {
                    self.define(v)?
                } else {
                    self.scratch(rows * 4, &format!("{name}.stat{slot}"))
                });
            }
        }
        let reads: Vec<BufRef> = [Some(src), Some(scale), bias].into_iter().flatten().collect();
        self.step(Arc::new(spec), rows, &reads, &writes, false, &name, "LayerNormalization", 0);
        Ok(())
    }

    /// InstanceNormalization: the LayerNormalization kernel over rows of the spatial dims, with
    /// one scale and bias per channel.
    pub(super) fn instance_norm(&mut self, id: NodeId, epsilon: f32) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let ins: Vec<Option<ValueId>> = (0..3).map(|i| self.in_val(id, i)).collect();
        let [Some(x), Some(scale), Some(bias)] = ins[..] else { return Err(self.unsupported(id, "a missing input")) };
        for v in [x, scale, bias] {
            self.f32_only(id, v)?;
        }
        let xs = self.shape(x)?;
        let (rows, len) = (xs[0] * xs[1], xs[2..].iter().product::<usize>());
        if len == 0 || rows == 0 {
            return Err(self.unsupported(id, "an empty input"));
        }
        let spec = LayerNormSpec { rows, len, epsilon, bias: true, stats: false, per_channel: Some(xs[1]) };
        let reads = [self.value(x)?, self.value(scale)?, self.value(bias)?];
        let dst = self.define(ValueId::new(id, 0))?;
        self.step(Arc::new(spec), rows, &reads, &[dst], false, &name, "InstanceNormalization", 0);
        Ok(())
    }

    /// BatchNormalization whose parameters are known only at run time (constant ones were
    /// folded away): one elementwise pass.
    pub(super) fn batch_norm(&mut self, id: NodeId, epsilon: f32) -> Result<(), LowerError> {
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        self.f32_only(id, x)?;
        let xs = self.shape(x)?;
        let mut inputs = vec![x];
        let mut shapes = vec![xs.clone()];
        for i in 1..5 {
            let v = self.in_val(id, i).ok_or_else(|| self.unsupported(id, "a missing input"))?;
            let mut ps = self.shape(v)?;
            if ps.len() == 1 {
                ps.resize(xs.len() - 1, 1);
            }
            inputs.push(v);
            shapes.push(ps);
        }
        // (x - mean) / sqrt(var + eps) * scale + bias
        let e = KExpr::bin(
            Bin::Ir(Binary::Add),
            KExpr::bin(
                Bin::Ir(Binary::Mul),
                KExpr::bin(
                    Bin::Ir(Binary::Div),
                    KExpr::bin(Bin::Ir(Binary::Sub), KExpr::In(0), KExpr::In(3)),
                    KExpr::act(
                        Activation::Unary(Unary::Sqrt),
                        KExpr::bin(Bin::Ir(Binary::Add), KExpr::In(4), KExpr::Const(epsilon)),
                    ),
                ),
                KExpr::In(1),
            ),
            KExpr::In(2),
        );
        self.emit_elementwise(id, &inputs, &shapes, e)
    }

    /// LRN: one pass per (image, channel) plane.
    pub(super) fn lrn(&mut self, id: NodeId, l: &incept_ir::ops::Lrn) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let out = ValueId::new(id, 0);
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        self.f32_only(id, x)?;
        let s = self.shape(x)?;
        let spec = LrnSpec {
            n: s[0],
            c: s[1],
            inner: s[2..].iter().product(),
            size: l.size,
            alpha: l.alpha,
            beta: l.beta,
            bias: l.bias,
        };
        let src = self.value(x)?;
        let dst = self.define(out)?;
        self.step(Arc::new(spec), s[0] * s[1], &[src], &[dst], true, &name, "LRN", 0);
        Ok(())
    }
}
