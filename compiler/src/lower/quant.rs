//! The quantized ops: QuantizeLinear and DequantizeLinear, and the integer convolutions and
//! matrix products (ConvInteger, QLinearConv, MatMulInteger, QLinearMatMul, QGemm), one scalar
//! step each: exact on every tier.

use std::sync::Arc;

use incept_ir::DType;
use incept_ir::graph::{NodeId, ValueId};
use incept_ir::ops::binary::broadcast_dims;
use incept_ir::ops::conv::Window;
use incept_ir::ops::quant::qrange;
use incept_ir::ops::{Op, norm_axis};

use super::conv::geom;
use super::{BufRef, LowerError, Lowerer};
use crate::codegen::int8_elementwise::{QuantKernel, QuantRowsSpec};
use crate::codegen::kernels::integer::{IntConvSpec, IntMatMulSpec, IntOut, Param};
use crate::codegen::kernels::nd::broadcast_strides;
use crate::codegen::kernels::quant::QuantSpec;
use crate::codegen::{KernelSpec, Tier};

impl<'g> Lowerer<'g> {
    /// Q (`quantize`) or DQ along `axis` (per-axis when the scale has more than one value).
    pub(super) fn quant(&mut self, id: NodeId, quantize: bool, axis: i64) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let out = ValueId::new(id, 0);
        let missing = |s: &Self| s.unsupported(id, "a missing input");
        let x = self.in_val(id, 0).ok_or_else(|| missing(self))?;
        let scale = self.in_val(id, 1).ok_or_else(|| missing(self))?;
        let zero = self.in_val(id, 2);
        let shape = self.shape(x)?;
        let channels: usize = self.shape(scale)?.iter().product();
        let inner = if channels > 1 {
            let ax = norm_axis(axis, shape.len()).map_err(|e| self.unsupported(id, e.to_string()))?;
            shape[ax + 1..].iter().product()
        } else {
            1
        };
        let int = if quantize { self.g.ty(out).dtype } else { self.g.ty(x).dtype };
        let n: usize = shape.iter().product();
        // 8-bit types on AVX-512: whole rows of one parameter sixteen at a time.
        let rows_inner = if channels == 1 { n } else { inner };
        if self.tier == Tier::Avx512 && matches!(int, DType::U8 | DType::I8) && (channels == 1 || inner >= 16) {
            let kernel = QuantKernel { quantize, signed: int == DType::I8, zero: zero.is_some() };
            let spec =
                QuantRowsSpec { rows: n / rows_inner.max(1), inner: rows_inner, channels, kernel: kernel.clone() };
            let mut reads = vec![self.value(x)?, self.value(scale)?];
            if let Some(z) = zero {
                reads.push(self.value(z)?);
            }
            let dst = self.define(out)?;
            let k = self.kernel(Arc::new(kernel));
            let tiles = spec.tiles();
            let op = if quantize { "QuantizeLinear" } else { "DequantizeLinear" };
            self.step(Arc::new(spec), tiles, &reads, &[dst], false, &name, op, 0);
            if let Some(step) = self.out.steps.last_mut() {
                step.operands.push(super::LOperand::Kernel(k));
            }
            return Ok(());
        }
        let spec = QuantSpec { quantize, int, n: shape.iter().product(), channels, inner, zero: zero.is_some() };
        let mut reads = vec![self.value(x)?, self.value(scale)?];
        if let Some(z) = zero {
            reads.push(self.value(z)?);
        }
        let dst = self.define(out)?;
        let tiles = spec.tiles();
        let op = if quantize { "QuantizeLinear" } else { "DequantizeLinear" };
        self.step(Arc::new(spec), tiles, &reads, &[dst], false, &name, op, 0);
        Ok(())
    }
}

/// Which integer product a node computes, and its operands' slots.
enum IntOp {
    /// QLinearConv (true) or ConvInteger (false).
    Conv {
        qlinear: bool,
    },
    /// QLinearMatMul (true) or MatMulInteger (false).
    MatMul {
        qlinear: bool,
    },
    QGemm {
        alpha: f32,
        trans_a: bool,
        trans_b: bool,
    },
}

impl<'g> Lowerer<'g> {
    /// The graph input at slot `i` as a kernel operand (appended to `reads`), or None when absent.
    fn int_param(&mut self, id: NodeId, i: usize, reads: &mut Vec<BufRef>) -> Result<Option<Param>, LowerError> {
        let Some(v) = self.in_val(id, i) else { return Ok(None) };
        let len = self.shape(v)?.iter().product();
        let dtype = self.g.ty(v).dtype;
        reads.push(self.value(v)?);
        Ok(Some(Param { operand: reads.len() - 1, len, dtype }))
    }

    fn required(&self, id: NodeId, i: usize) -> Result<ValueId, LowerError> {
        self.in_val(id, i).ok_or_else(|| self.unsupported(id, format!("a missing input {i}")))
    }

    /// ConvInteger and QLinearConv: on the VNNI tile where it applies, else a direct integer
    /// conv (see `IntConvSpec`).
    pub(super) fn int_conv(
        &mut self,
        id: NodeId,
        qlinear: bool,
        window: &Window,
        groups: usize,
    ) -> Result<(), LowerError> {
        if qlinear && matches!(self.tier, Tier::Avx2 | Tier::Avx512) && self.int8_conv(id, window, groups)? {
            return Ok(());
        }
        self.integer(id, IntOp::Conv { qlinear }, Some((window, groups)))
    }
    /// MatMulInteger and QLinearMatMul.
    pub(super) fn int_matmul(&mut self, id: NodeId, qlinear: bool) -> Result<(), LowerError> {
        if qlinear && self.int8_isa.is_some() && self.int8_matmul(id)? {
            return Ok(());
        }
        self.integer(id, IntOp::MatMul { qlinear }, None)
    }

    pub(super) fn qgemm(&mut self, id: NodeId, alpha: f32, trans_a: bool, trans_b: bool) -> Result<(), LowerError> {
        self.integer(id, IntOp::QGemm { alpha, trans_a, trans_b }, None)
    }

    fn integer(&mut self, id: NodeId, op: IntOp, conv: Option<(&Window, usize)>) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let out = ValueId::new(id, 0);
        // Slots of the two products' operands, their zero points, and the output's parameters.
        let (a_slot, b_slot) = match op {
            IntOp::Conv { qlinear: true } | IntOp::MatMul { qlinear: true } | IntOp::QGemm { .. } => (0, 3),
            _ => (0, 1),
        };
        let (av, bv) = (self.required(id, a_slot)?, self.required(id, b_slot)?);
        let mut reads = vec![self.value(av)?, self.value(bv)?];
        let (a_zero, b_zero) = match op {
            IntOp::Conv { qlinear: false } | IntOp::MatMul { qlinear: false } => {
                (self.int_param(id, 2, &mut reads)?, self.int_param(id, 3, &mut reads)?)
            }
            _ => (self.int_param(id, 2, &mut reads)?, self.int_param(id, 5, &mut reads)?),
        };
        let qlinear = !matches!(op, IntOp::Conv { qlinear: false } | IntOp::MatMul { qlinear: false });
        let per_col = !matches!(op, IntOp::Conv { .. });
        let out_type = self.g.ty(out).dtype;
        let int_out = if !qlinear {
            IntOut::Sums
        } else {
            let scales: Vec<Param> = [1, 4]
                .into_iter()
                .map(|i| self.int_param(id, i, &mut reads)?.ok_or_else(|| self.unsupported(id, "a missing scale")))
                .collect::<Result<_, _>>()?;
            let divide = self.int_param(id, 6 + matches!(op, IntOp::QGemm { .. }) as usize, &mut reads)?;
            let alpha = if let IntOp::QGemm { alpha, .. } = op { alpha } else { 1.0 };
            let zero_slot = 7 + matches!(op, IntOp::QGemm { .. }) as usize;
            match self.int_param(id, zero_slot, &mut reads)? {
                Some(zero) => {
                    let range = match &self.g.node(id).op {
                        Op::QLinearConv(q) => q.out_range(out_type),
                        _ => qrange(out_type),
                    }
                    .ok_or_else(|| self.unsupported(id, format!("outputs of type {out_type}")))?;
                    IntOut::Quantized { scales, alpha, divide, per_col, zero, dtype: out_type, range }
                }
                None if matches!(op, IntOp::QGemm { .. }) => IntOut::Scaled { scales, alpha, divide, per_col },
                None => return Err(self.unsupported(id, "a missing output zero point")),
            }
        };
        let bias_slot = match op {
            IntOp::Conv { qlinear: true } => Some(8),
            IntOp::QGemm { .. } => Some(6),
            _ => None,
        };
        let bias = match bias_slot {
            Some(s) => self.int_param(id, s, &mut reads)?,
            None => None,
        };
        let (a_type, b_type) = (self.g.ty(av).dtype, self.g.ty(bv).dtype);
        let (ash, bsh, osh) = (self.shape(av)?, self.shape(bv)?, self.shape(out)?);
        let dst = self.define(out)?;
        let y = reads.len();
        let (spec, tiles, flops): (Arc<dyn KernelSpec>, usize, u64) = match (op, conv) {
            (IntOp::Conv { .. }, Some((window, groups))) => {
                if ash.len() != 4 && ash.len() != 3 {
                    return Err(
                        self.unsupported(id, format!("a {}-D integer convolution", ash.len().saturating_sub(2)))
                    );
                }
                let spec = IntConvSpec {
                    n: ash[0],
                    c: ash[1],
                    m: osh[1],
                    // 1-D convs as height 1.
                    g: geom(window, &ash, &osh),
                    groups,
                    x_type: a_type,
                    w_type: b_type,
                    x_zero: a_zero,
                    w_zero: b_zero,
                    bias,
                    out: int_out,
                    y,
                };
                let per: usize = bsh[1..].iter().product();
                let flops = 2 * (osh.iter().product::<usize>() * per) as u64;
                let tiles = spec.tiles();
                (Arc::new(spec), tiles, flops)
            }
            (IntOp::QGemm { trans_a, trans_b, .. }, _) => {
                let (m, k) = if trans_a { (ash[1], ash[0]) } else { (ash[0], ash[1]) };
                let n = if trans_b { bsh[0] } else { bsh[1] };
                let (a_rs, a_cs) = if trans_a { (1, m as isize) } else { (k as isize, 1) };
                let (b_rs, b_cs) = if trans_b { (1, k as isize) } else { (n as isize, 1) };
                let bias = match (bias, bias_slot) {
                    (Some(p), Some(slot)) => {
                        let cs = self.shape(self.required(id, slot)?)?;
                        // C broadcast to [M, N]: a stride is 0 along a dim of size 1 or absent.
                        let (r, c) = match cs.len() {
                            0 => (1, 1),
                            1 => (1, cs[0]),
                            _ => (cs[0], cs[1]),
                        };
                        let rs = if r == 1 { 0 } else { c as isize };
                        let cstr = if c == 1 { 0 } else { 1 };
                        Some((p.operand, rs, cstr))
                    }
                    _ => None,
                };
                let spec = IntMatMulSpec {
                    m,
                    k,
                    n,
                    batch: vec![],
                    a_strides: vec![],
                    b_strides: vec![],
                    a_rs,
                    a_cs,
                    b_rs,
                    b_cs,
                    a_type,
                    b_type,
                    a_zero,
                    b_zero,
                    bias,
                    out: int_out,
                    y,
                };
                let tiles = spec.tiles();
                (Arc::new(spec), tiles, 2 * (m * n * k) as u64)
            }
            _ => {
                let a2: Vec<usize> = if ash.len() == 1 { vec![1, ash[0]] } else { ash.clone() };
                let b2: Vec<usize> = if bsh.len() == 1 { vec![bsh[0], 1] } else { bsh.clone() };
                let (m, k, n) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 1]);
                let (ab, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
                let batch = broadcast_dims(ab, bb).map_err(|e| self.unsupported(id, e.to_string()))?;
                let scaled =
                    |st: Vec<isize>, size: usize| st.into_iter().map(|s| s * size as isize).collect::<Vec<_>>();
                let spec = IntMatMulSpec {
                    m,
                    k,
                    n,
                    a_strides: scaled(broadcast_strides(ab, &batch), m * k),
                    b_strides: scaled(broadcast_strides(bb, &batch), k * n),
                    batch,
                    a_rs: k as isize,
                    a_cs: 1,
                    b_rs: n as isize,
                    b_cs: 1,
                    a_type,
                    b_type,
                    a_zero,
                    b_zero,
                    bias: None,
                    out: int_out,
                    y,
                };
                let tiles = spec.tiles();
                let flops = 2 * (tiles * n * k) as u64;
                (Arc::new(spec), tiles, flops)
            }
        };
        let op_name = self.g.node(id).op.name();
        self.step(spec, tiles, &reads, &[dst], false, &name, op_name, flops);
        Ok(())
    }
}
