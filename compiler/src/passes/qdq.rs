//! QDQ groups into integer ops. A QDQ model (what `quantize_static` writes by default) wraps f32
//! ops in DequantizeLinear inputs and a QuantizeLinear output; read literally it dequantizes,
//! computes in f32 and quantizes again. The group `Q(Conv(DQ(x), DQ(w), DQ(b)))` is the integer
//! conv QLinearConv defines (with a Relu or Clip before the Q, one whose output is clamped), and `Q(Add(DQ(a), DQ(b)))` is QLinearAdd (`Mul`: QLinearMul), which
//! ONNX Runtime's QDQ fusion runs too. A Pad or MaxPool between a DQ and a Q of the same
//! parameters pads or pools the integers themselves (exactly).
//!
//! The integer op sums exactly where the literal reading rounds each dequantized value and each
//! partial sum to f32, so a value lying within that rounding of a halfway point between two
//! integers comes out one step apart, and such steps can add up over layers (ResNet50's outputs
//! move by up to two): beyond f32 rounding, so it is opt-in (`--precision int8`, which sets
//! `PassOptions::fuse_qdq`) and `incept check --precision int8` reports what it moved. The convs
//! then run on the integer kernels (on AVX512-VNNI, the int8 tile).

use incept_ir::graph::{Graph, NodeId, ValueId};
use incept_ir::ops::pad::PadMode;
use incept_ir::ops::qlinear::{QBinaryKind, QLinearAveragePool, QLinearBinary, QLinearConcat};
use incept_ir::ops::quant::{qrange, quantize};
use incept_ir::ops::{Binary, Op, Pool, PoolKind, QLinearConv, QLinearMatMul, Unary};
use incept_ir::{DType, OpError, Tensor};

use crate::passes::util::single_user;
use crate::passes::{Exactness, Pass, PassContext, Patch, PatchValue};

pub struct FuseQdq;

/// A dequantized value: the integer tensor, its scale and its zero point (None: absent).
struct Dq {
    q: ValueId,
    scale: ValueId,
    zero: Option<ValueId>,
}

fn input(g: &Graph, node: NodeId, i: usize) -> Option<ValueId> {
    g.node(node).inputs().get(i).copied().flatten()
}

fn is_const(g: &Graph, v: ValueId) -> bool {
    g.const_value(v).is_some()
}

/// `v` made by a DequantizeLinear with constant parameters, per tensor (`per_axis` None) or
/// per tensor or along `per_axis` (the weights' output channels).
fn dequantized(g: &Graph, v: ValueId, per_axis: Option<usize>) -> Option<Dq> {
    let node = g.node(v.node);
    let Op::DequantizeLinear(d) = &node.op else { return None };
    let (q, scale, zero) = (input(g, v.node, 0)?, input(g, v.node, 1)?, input(g, v.node, 2));
    let scale_t = g.const_value(scale)?;
    if zero.is_some_and(|z| !is_const(g, z)) {
        return None;
    }
    let one = scale_t.numel() == 1;
    let rank = g.ty(q).rank() as i64;
    let axis_ok = per_axis.is_some_and(|a| (d.axis == a as i64 || d.axis == a as i64 - rank) && scale_t.rank() == 1);
    (one || axis_ok).then_some(Dq { q, scale, zero })
}

/// The Q's scale and zero point (None: absent) when they are constants. (`rewrite` already
/// took only per-tensor output scales.)
fn output_params(g: &Graph, q_node: NodeId) -> Option<(ValueId, Option<ValueId>)> {
    let (s, z) = (input(g, q_node, 1)?, input(g, q_node, 2));
    (is_const(g, s) && z.is_none_or(|z| is_const(g, z))).then_some((s, z))
}

/// `op` of two dequantized operands and the Q's parameters, replacing the Q: inputs a, a_scale,
/// a_zero, b, b_scale, b_zero, y_scale, y_zero as QLinearMatMul and QLinearAdd/Mul take them
/// (absent zero points made zeros of their operand's type).
fn two_operands(g: &Graph, q_node: NodeId, [a, b]: [&Dq; 2], op: Op) -> Option<Patch> {
    let out = ValueId::new(q_node, 0);
    let (ys, yz) = output_params(g, q_node)?;
    let name = &g.node(q_node).name;
    let mut p = Patch::new();
    let az = zero_of(&mut p, g, a.zero, g.ty(a.q).dtype, a.scale, &format!("{name}/a_zero"));
    let bz = zero_of(&mut p, g, b.zero, g.ty(b.q).dtype, b.scale, &format!("{name}/b_zero"));
    let yz = zero_of(&mut p, g, yz, g.ty(out).dtype, ys, &format!("{name}/y_zero"));
    let old = |v: ValueId| Some(PatchValue::Old(v));
    let inputs = vec![old(a.q), old(a.scale), Some(az), old(b.q), old(b.scale), Some(bz), old(ys), Some(yz)];
    let fused = p.add_node(name, op, inputs, 1)[0];
    p.replace(out, fused);
    Some(p)
}

/// A zero point input: the given one, or a new constant 0 of `dtype` shaped like `like`.
fn zero_of(p: &mut Patch, g: &Graph, zero: Option<ValueId>, dtype: DType, like: ValueId, name: &str) -> PatchValue {
    match zero {
        Some(z) => PatchValue::Old(z),
        None => {
            let n: usize = g.ty(like).static_dims().map(|d| d.iter().product()).unwrap_or(1);
            let shape = g.ty(like).static_dims().unwrap_or_default();
            let t = match dtype {
                DType::I8 => Tensor::from_vec(shape, vec![0i8; n]),
                _ => Tensor::from_vec(shape, vec![0u8; n]),
            };
            p.add_const(name, t)
        }
    }
}

impl FuseQdq {
    /// `Q(Conv(DQ(x), DQ(w), DQ(b)?))` with constant integer weights and an i32 bias whose scale
    /// is the product of the input's and the weights' scales.
    fn conv(g: &Graph, q_node: NodeId, conv: NodeId, clamp: Option<(i32, i32)>) -> Option<Patch> {
        let Op::Conv(c) = &g.node(conv).op else { return None };
        let x = dequantized(g, input(g, conv, 0)?, None)?;
        let w = dequantized(g, input(g, conv, 1)?, Some(0))?;
        let int8 = |v: ValueId| matches!(g.ty(v).dtype, DType::U8 | DType::I8);
        if !int8(x.q) || !int8(w.q) || !is_const(g, w.q) {
            return None;
        }
        let bias = match input(g, conv, 2) {
            None => None,
            Some(b) => {
                let bq = dequantized(g, b, Some(0))?;
                if g.ty(bq.q).dtype != DType::I32 || !is_const(g, bq.q) {
                    return None;
                }
                if let Some(z) = bq.zero
                    && g.const_value(z)?.to_i64s().ok()?.iter().any(|&v| v != 0)
                {
                    return None;
                }
                // The bias must be in units of x_scale * w_scale, as QLinearConv adds it.
                let xs = g.const_value(x.scale)?.view::<f32>().ok()?[0];
                let ws = g.const_value(w.scale)?.view::<f32>().ok()?.into_owned();
                let bs = g.const_value(bq.scale)?.view::<f32>().ok()?.into_owned();
                let m = g.ty(bq.q).numel()?;
                let at = |v: &[f32], i: usize| v[if v.len() == 1 { 0 } else { i }];
                if (0..m).any(|i| at(&bs, i).to_bits() != (xs * at(&ws, i)).to_bits()) {
                    return None;
                }
                Some(bq.q)
            }
        };
        let (ys, yz) = output_params(g, q_node)?;
        let out = ValueId::new(q_node, 0);
        let name = &g.node(q_node).name;
        let mut p = Patch::new();
        let xz = zero_of(&mut p, g, x.zero, g.ty(x.q).dtype, x.scale, &format!("{name}/x_zero"));
        let wz = zero_of(&mut p, g, w.zero, g.ty(w.q).dtype, w.scale, &format!("{name}/w_zero"));
        let yz = zero_of(&mut p, g, yz, g.ty(out).dtype, ys, &format!("{name}/y_zero"));
        let mut inputs = vec![
            Some(PatchValue::Old(x.q)),
            Some(PatchValue::Old(x.scale)),
            Some(xz),
            Some(PatchValue::Old(w.q)),
            Some(PatchValue::Old(w.scale)),
            Some(wz),
            Some(PatchValue::Old(ys)),
            Some(yz),
        ];
        inputs.extend(bias.map(|b| Some(PatchValue::Old(b))));
        let fused = p.add_node(name, Op::QLinearConv(QLinearConv { conv: c.clone(), clamp }), inputs, 1)[0];
        p.replace(out, fused);
        Some(p)
    }

    /// `Q(Relu(Conv(..)))` or `Q(Clip(Conv(..), min, max))` with constant bounds: the conv
    /// group with its output clamped to the quantized bounds, `[Q(0), max]` for Relu and
    /// `[Q(min), Q(max)]` for Clip (an absent bound: the type's end). Quantising is increasing
    /// (positive scale), so `Q(clip(y, a, b)) = clip(Q(y), Q(a), Q(b))`: the clamp adds no
    /// error of its own. ONNX Runtime drops such a Relu or Clip when the clamp is the whole
    /// range; a QAT export keeps them in front of its Q.
    fn activated_conv(g: &Graph, q_node: NodeId, act: NodeId) -> Option<Patch> {
        let y = input(g, act, 0)?;
        if !matches!(g.node(y.node).op, Op::Conv(_)) || single_user(g, y).is_none() || g.outputs().contains(&y) {
            return None;
        }
        let out = g.ty(ValueId::new(q_node, 0)).dtype;
        let range = qrange(out)?;
        let scale = g.const_value(input(g, q_node, 1)?)?.view::<f32>().ok()?[0];
        if !(scale.is_normal() && scale > 0.0) {
            return None;
        }
        let zero = match input(g, q_node, 2) {
            Some(z) => g.const_value(z)?.to_i64s().ok()?.first().copied()? as i32,
            None => 0,
        };
        let q = |v: f32| quantize(v, scale, zero, range);
        let bound = |i: usize| -> Option<Option<f32>> {
            match input(g, act, i) {
                None => Some(None),
                Some(b) => {
                    let v = g.const_value(b)?.to_f64s().ok()?.first().copied()? as f32;
                    (!v.is_nan()).then_some(Some(v))
                }
            }
        };
        let clamp = match &g.node(act).op {
            Op::Unary(Unary::Relu) => (q(0.0), range.1),
            Op::Clip(_) => {
                let (a, b) = (bound(1)?, bound(2)?);
                (a.map_or(range.0, q), b.map_or(range.1, q))
            }
            _ => return None,
        };
        if clamp.0 > clamp.1 {
            return None;
        }
        FuseQdq::conv(g, q_node, y.node, (clamp != range).then_some(clamp))
    }

    /// `Q(MatMul(DQ(a), DQ(b)))` with constant 8-bit B of two dims (scales per tensor or per
    /// column) and per-tensor A: QLinearMatMul, as ONNX Runtime's QDQ fusion makes it.
    fn matmul(g: &Graph, q_node: NodeId, mm: NodeId) -> Option<Patch> {
        let a = dequantized(g, input(g, mm, 0)?, None)?;
        let bv = input(g, mm, 1)?;
        if g.ty(bv).rank() != 2 {
            return None;
        }
        let b = dequantized(g, bv, Some(1))?;
        let int8 = |v: ValueId| matches!(g.ty(v).dtype, DType::U8 | DType::I8);
        let out = ValueId::new(q_node, 0);
        if !int8(a.q) || !int8(b.q) || !is_const(g, b.q) || !int8(out) {
            return None;
        }
        two_operands(g, q_node, [&a, &b], Op::QLinearMatMul(QLinearMatMul))
    }

    /// `Q(Concat(DQ(a), DQ(b), ..))` of one 8-bit type throughout, per-tensor parameters:
    /// ONNX Runtime's QLinearConcat (each input requantised to the output's parameters).
    fn concat(g: &Graph, q_node: NodeId, cat: NodeId, axis: i64) -> Option<Patch> {
        let out = ValueId::new(q_node, 0);
        let t = g.ty(out).dtype;
        if !matches!(t, DType::U8 | DType::I8) {
            return None;
        }
        let parts: Vec<Dq> = g.node(cat).inputs().iter().map(|i| dequantized(g, (*i)?, None)).collect::<Option<_>>()?;
        if parts.iter().any(|d| g.ty(d.q).dtype != t) {
            return None;
        }
        let (ys, yz) = output_params(g, q_node)?;
        let name = &g.node(q_node).name;
        let mut p = Patch::new();
        let yz = zero_of(&mut p, g, yz, t, ys, &format!("{name}/y_zero"));
        let mut inputs = vec![Some(PatchValue::Old(ys)), Some(yz)];
        for (i, d) in parts.iter().enumerate() {
            let z = zero_of(&mut p, g, d.zero, t, d.scale, &format!("{name}/zero_{i}"));
            inputs.extend([Some(PatchValue::Old(d.q)), Some(PatchValue::Old(d.scale)), Some(z)]);
        }
        let fused = p.add_node(name, Op::QLinearConcat(QLinearConcat { axis }), inputs, 1)[0];
        p.replace(out, fused);
        Some(p)
    }

    /// `Q(AveragePool(DQ(x)))` of one 8-bit type, per-tensor parameters, 1-D or 2-D, no dilations:
    /// ONNX Runtime's QLinearAveragePool.
    fn average_pool(g: &Graph, q_node: NodeId, pool: NodeId, p: &Pool) -> Option<Patch> {
        let x = dequantized(g, input(g, pool, 0)?, None)?;
        let out = ValueId::new(q_node, 0);
        let t = g.ty(out).dtype;
        // 1-D and 2-D pools, which the integer kernels take.
        let rank = g.ty(x.q).rank();
        if g.ty(x.q).dtype != t
            || !matches!(t, DType::U8 | DType::I8)
            || p.window.dilations.iter().any(|&d| d != 1)
            || !(3..=4).contains(&rank)
        {
            return None;
        }
        let (ys, yz) = output_params(g, q_node)?;
        let name = &g.node(q_node).name;
        let mut patch = Patch::new();
        let xz = zero_of(&mut patch, g, x.zero, t, x.scale, &format!("{name}/x_zero"));
        let yz = zero_of(&mut patch, g, yz, t, ys, &format!("{name}/y_zero"));
        let op = Op::QLinearAveragePool(QLinearAveragePool {
            window: p.window.clone(),
            ceil_mode: p.ceil_mode,
            count_include_pad: p.count_include_pad,
            channels_last: false,
        });
        let inputs = vec![
            Some(PatchValue::Old(x.q)),
            Some(PatchValue::Old(x.scale)),
            Some(xz),
            Some(PatchValue::Old(ys)),
            Some(yz),
        ];
        let fused = patch.add_node(name, op, inputs, 1)[0];
        patch.replace(out, fused);
        Some(patch)
    }

    /// `Q(Add(DQ(a), DQ(b)))` or `Q(Mul(..))` of one integer type throughout, per-tensor
    /// parameters: QLinearAdd or QLinearMul.
    fn binary(g: &Graph, q_node: NodeId, add: NodeId, kind: QBinaryKind) -> Option<Patch> {
        let (a, b) = (dequantized(g, input(g, add, 0)?, None)?, dequantized(g, input(g, add, 1)?, None)?);
        let out = ValueId::new(q_node, 0);
        let t = g.ty(out).dtype;
        if g.ty(a.q).dtype != t || g.ty(b.q).dtype != t || !matches!(t, DType::U8 | DType::I8) {
            return None;
        }
        two_operands(g, q_node, [&a, &b], Op::QLinearBinary(QLinearBinary { kind }))
    }
}

impl FuseQdq {
    /// `Q(Pad(DQ(x), pads, v))` in constant mode with the same parameters on both sides is
    /// `Pad(x, pads, Q(v))`: `Q(DQ(x))` is x again (the f32 round trip of an 8-bit value is
    /// within far less than half a step of it, for a normal scale), so this one is exact.
    fn pad(g: &Graph, q_node: NodeId, pad: NodeId) -> Option<Patch> {
        let (x, t, scale, z) = same_params(g, input(g, pad, 0)?, q_node)?;
        // The pads operand (and axes, if any) as they are; the value quantized.
        let value = match input(g, pad, 2) {
            Some(v) => g.const_value(v)?.to_f64s().ok()?.first().copied()? as f32,
            None => 0.0,
        };
        let range = qrange(t)?;
        let qv = quantize(value, scale, z as i32, range);
        let qt = match t {
            DType::I8 => Tensor::from_vec(vec![], vec![qv as i8]),
            _ => Tensor::from_vec(vec![], vec![qv as u8]),
        };
        let name = &g.node(q_node).name;
        let mut p = Patch::new();
        let value = p.add_const(&format!("{name}/pad_value"), qt);
        let mut inputs: Vec<Option<PatchValue>> = g.node(pad).inputs().iter().map(|i| i.map(PatchValue::Old)).collect();
        inputs[0] = Some(PatchValue::Old(x.q));
        if inputs.len() < 3 {
            inputs.resize(3, None);
        }
        inputs[2] = Some(value);
        let fused = p.add_node(name, g.node(pad).op.clone(), inputs, 1)[0];
        p.replace(ValueId::new(q_node, 0), fused);
        Some(p)
    }
}

/// The DQ making `v` and the Q `q_node` when they have the same per-tensor 8-bit parameters
/// and a positive normal scale, so that `Q(DQ(x))` is x: the DQ, the type, the scale and the
/// zero point.
fn same_params(g: &Graph, v: ValueId, q_node: NodeId) -> Option<(Dq, DType, f32, i64)> {
    let x = dequantized(g, v, None)?;
    let t = g.ty(ValueId::new(q_node, 0)).dtype;
    let (qs, qz) = (input(g, q_node, 1)?, input(g, q_node, 2));
    if g.ty(x.q).dtype != t || !matches!(t, DType::U8 | DType::I8) {
        return None;
    }
    let scale = g.const_value(x.scale)?.view::<f32>().ok()?[0];
    let same_scale = g.const_value(qs)?.view::<f32>().ok()?[0].to_bits() == scale.to_bits();
    let zero = |z: Option<ValueId>| -> Option<i64> {
        match z {
            Some(z) => g.const_value(z)?.to_i64s().ok()?.first().copied(),
            None => Some(0),
        }
    };
    let z = zero(x.zero)?;
    (same_scale && zero(qz)? == z && scale.is_normal() && scale >= 1e-30).then_some((x, t, scale, z))
}

impl FuseQdq {
    /// `Q(MaxPool(DQ(x)))` with the same parameters on both sides is `MaxPool(x)`: the
    /// dequantization is increasing, so the largest value is the largest integer's, and
    /// `Q(DQ(x))` is x. Exact, as ONNX Runtime's QDQ handling drops such pairs too.
    fn max_pool(g: &Graph, q_node: NodeId, pool: NodeId) -> Option<Patch> {
        let (x, ..) = same_params(g, input(g, pool, 0)?, q_node)?;
        let name = &g.node(q_node).name;
        let mut p = Patch::new();
        let fused = p.add_node(name, g.node(pool).op.clone(), vec![Some(PatchValue::Old(x.q))], 1)[0];
        p.replace(ValueId::new(q_node, 0), fused);
        Some(p)
    }
}

impl Pass for FuseQdq {
    fn name(&self) -> &'static str {
        "fuse-qdq"
    }
    fn description(&self) -> &'static str {
        "QDQ groups into integer ops, with --precision int8: Q(Conv(DQ, DQ, DQ)) -> QLinearConv (a Relu or Clip before the Q: its output clamped), Q(Add(DQ, DQ)) -> QLinearAdd, Q(Mul(DQ, DQ)) -> QLinearMul, Q(MatMul(DQ, DQ)) -> QLinearMatMul, Q(Concat(DQ..)) -> QLinearConcat, Q(AveragePool(DQ)) -> QLinearAveragePool (exact integer sums: outputs move by quantisation steps from the f32 reading), Q(Pad(DQ)) and Q(MaxPool(DQ)) -> Pad and MaxPool of the integers (exact)"
    }
    fn exactness(&self) -> Exactness {
        Exactness::Approximate
    }
    fn rewrite(&self, g: &Graph, node: NodeId, cx: &PassContext) -> Result<Option<Patch>, OpError> {
        if !cx.options.fuse_qdq {
            return Ok(None);
        }
        let Op::QuantizeLinear(q) = &g.node(node).op else { return Ok(None) };
        let Some(y) = input(g, node, 0) else { return Ok(None) };
        // Per-tensor output parameters, and the f32 value read by this Q alone.
        if q.to.is_none() || g.outputs().contains(&y) || single_user(g, y).is_none() {
            return Ok(None);
        }
        if input(g, node, 1).and_then(|s| g.const_value(s)).is_none_or(|s| s.numel() != 1) {
            return Ok(None);
        }
        Ok(match &g.node(y.node).op {
            Op::Conv(_) => FuseQdq::conv(g, node, y.node, None),
            Op::Unary(Unary::Relu) | Op::Clip(_) => FuseQdq::activated_conv(g, node, y.node),
            Op::MatMul(_) => FuseQdq::matmul(g, node, y.node),
            Op::Concat(c) => FuseQdq::concat(g, node, y.node, c.axis),
            Op::Pool(p) if p.kind == PoolKind::Avg => FuseQdq::average_pool(g, node, y.node, p),
            Op::Binary(Binary::Add) => FuseQdq::binary(g, node, y.node, QBinaryKind::Add),
            Op::Binary(Binary::Mul) => FuseQdq::binary(g, node, y.node, QBinaryKind::Mul),
            Op::Pad(p) if p.mode == PadMode::Constant => FuseQdq::pad(g, node, y.node),
            Op::Pool(p) if p.kind == PoolKind::Max && g.node(y.node).outputs.len() == 1 => {
                FuseQdq::max_pool(g, node, y.node)
            }
            _ => None,
        })
    }
}
