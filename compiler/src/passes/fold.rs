//! Folding BatchNormalization and per-channel scale/shift (Mul/Add by constants) into the
//! weights and bias of a neighbouring Conv, ConvTranspose, Gemm or MatMul.
//!
//! A per-channel affine map `y = x * scale + shift` after a linear op folds into it:
//! `W'[o] = W[o] * scale[o]`, `b'[o] = b[o] * scale[o] + shift[o]`; BatchNormalization is such a
//! map with `scale = gamma / sqrt(var + eps)` and `shift = beta - mean * scale`. Before a Conv, a
//! per-input-channel scale always folds (zero padding stays zero when scaled), while a shift folds
//! only when the Conv has no padding (padded zeros are not shifted).

use incept_ir::OpError;
use incept_ir::graph::{Graph, NodeId, ValueId};
use incept_ir::ops::{BatchNorm, Binary, Conv, Gemm, Op};

use crate::passes::util::{const_f64, dim, float_tensor, per_channel, single_user};
use crate::passes::{Pass, PassContext, Patch, PatchValue};

/// Per-channel `scale` and `shift` of a BatchNormalization with constant, per-channel parameters.
fn bn_affine(g: &Graph, id: NodeId, bn: &BatchNorm) -> Option<(Vec<f64>, Vec<f64>)> {
    let node = g.node(id);
    let p: Vec<Vec<f64>> =
        (1..5).map(|i| const_f64(g, node.inputs().get(i).copied().flatten())).collect::<Option<_>>()?;
    let c = dim(g, node.inputs()[0]?, 1)?;
    if p.iter().any(|v| v.len() != c) {
        return None; // the per-activation (spatial = 0) form
    }
    let eps = bn.epsilon as f64;
    let scale: Vec<f64> = (0..c).map(|i| p[0][i] / (p[3][i] + eps).sqrt()).collect();
    let shift: Vec<f64> = (0..c).map(|i| p[1][i] - p[2][i] * scale[i]).collect();
    Some((scale, shift))
}

/// Builds, into `patch`, a copy of the linear op `id` with `y * scale + shift` folded into its
/// weights and bias. Returns the new op's output, or `None` when the op cannot take it.
fn fold_after(
    g: &Graph,
    id: NodeId,
    scale: Option<&[f64]>,
    shift: Option<&[f64]>,
    patch: &mut Patch,
) -> Option<PatchValue> {
    let node = g.node(id);
    let inputs = node.inputs();
    let x = inputs.first().copied().flatten()?;
    let wv = inputs.get(1).copied().flatten()?;
    let w = g.const_value(wv)?;
    let wf = w.to_f64s().ok().filter(|_| w.dtype().is_float())?;
    let bias = match inputs.get(2).copied().flatten() {
        Some(b) => Some(const_f64(g, Some(b))?),
        None => None,
    };
    let ws = w.shape();
    let name = &node.name;
    // The output channel of every weight element, and the channel count.
    let (channel_of, channels): (Box<dyn Fn(usize) -> usize>, usize) = match &node.op {
        Op::Conv(_) => {
            let per = ws[1..].iter().product::<usize>();
            (Box::new(move |i| i / per), ws[0])
        }
        Op::ConvTranspose(ct) => {
            let (c, mg) = (ws[0], ws[1]);
            let inner: usize = ws[2..].iter().product();
            let cg = c / ct.group;
            (Box::new(move |i| ((i / (mg * inner)) / cg) * mg + (i / inner) % mg), mg * ct.group)
        }
        Op::Gemm(gm) => {
            if ws.len() != 2 {
                return None;
            }
            let n = if gm.trans_b { ws[0] } else { ws[1] };
            let cols = ws[1];
            if gm.trans_b { (Box::new(move |i| i / cols), n) } else { (Box::new(move |i| i % cols), n) }
        }
        Op::MatMul(_) => {
            // Only the plain dense layer: A [M, K] x B [K, N].
            if ws.len() != 2 || g.ty(x).rank() != 2 {
                return None;
            }
            let cols = ws[1];
            (Box::new(move |i| i % cols), cols)
        }
        _ => return None,
    };
    if scale.is_some_and(|s| s.len() != channels) || shift.is_some_and(|s| s.len() != channels) {
        return None;
    }
    let one = vec![1.0; channels];
    let zero = vec![0.0; channels];
    let (scale, shift) = (scale.unwrap_or(&one), shift.unwrap_or(&zero));
    // A shift alone leaves the weights as they are.
    let w2 = if scale.iter().all(|&s| s == 1.0) {
        PatchValue::Old(wv)
    } else {
        let new_w: Vec<f64> = wf.iter().enumerate().map(|(i, &v)| v * scale[channel_of(i)]).collect();
        patch.add_const(&format!("{}/folded", g.value(wv).name), float_tensor(w.dtype(), ws.to_vec(), new_w))
    };
    let dtype = w.dtype();
    match &node.op {
        Op::Conv(_) | Op::ConvTranspose(_) => {
            let b: Vec<f64> =
                (0..channels).map(|o| bias.as_ref().map_or(0.0, |b| b[o]) * scale[o] + shift[o]).collect();
            let b2 = patch.add_const(&format!("{name}/folded_bias"), float_tensor(dtype, vec![channels], b));
            Some(patch.add(name, node.op.clone(), vec![x.into(), w2, b2]))
        }
        Op::Gemm(gm) => {
            // C' = beta * C * scale + shift, broadcast along the output columns.
            let c2 = match inputs.get(2).copied().flatten() {
                Some(cv) => {
                    let ct = g.const_value(cv)?;
                    let cs = ct.shape().to_vec();
                    let cols = *cs.last().unwrap_or(&1);
                    if cols != channels && cols != 1 {
                        return None;
                    }
                    let vals = const_f64(g, Some(cv))?;
                    if cols == 1 && vals.len() != 1 {
                        return None;
                    }
                    let full: Vec<f64> = if cols == channels {
                        vals.iter()
                            .enumerate()
                            .map(|(i, &v)| gm.beta as f64 * v * scale[i % channels] + shift[i % channels])
                            .collect()
                    } else {
                        (0..channels).map(|o| gm.beta as f64 * vals[0] * scale[o] + shift[o]).collect()
                    };
                    let shape = if cols == channels { cs } else { vec![channels] };
                    patch.add_const(&format!("{name}/folded_bias"), float_tensor(dtype, shape, full))
                }
                None => {
                    patch.add_const(&format!("{name}/folded_bias"), float_tensor(dtype, vec![channels], shift.to_vec()))
                }
            };
            let op = Op::Gemm(Gemm { beta: 1.0, ..gm.clone() });
            Some(patch.add(name, op, vec![x.into(), w2, c2]))
        }
        Op::MatMul(_) => {
            let b2 =
                patch.add_const(&format!("{name}/folded_bias"), float_tensor(dtype, vec![channels], shift.to_vec()));
            let op = Op::Gemm(Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: false });
            Some(patch.add(name, op, vec![x.into(), w2, b2]))
        }
        _ => None,
    }
}

fn is_linear(op: &Op) -> bool {
    matches!(op, Op::Conv(_) | Op::ConvTranspose(_) | Op::Gemm(_) | Op::MatMul(_))
}

/// BatchNormalization right after a Conv, ConvTranspose, Gemm or MatMul whose output it alone
/// reads folds into that op's weights and bias (in new constants: shared weights stay intact).
pub struct FoldBatchNorm;

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold-batchnorm"
    }
    fn description(&self) -> &'static str {
        "fold BatchNormalization into the preceding Conv/ConvTranspose/Gemm/MatMul"
    }
    fn rewrite(&self, g: &Graph, id: NodeId, _: &PassContext) -> Result<Option<Patch>, OpError> {
        let Op::BatchNorm(bn) = &g.node(id).op else { return Ok(None) };
        let Some(x) = g.node(id).inputs()[0] else { return Ok(None) };
        if !is_linear(&g.node(x.node).op) || single_user(g, x).is_none() {
            return Ok(None);
        }
        let Some((scale, shift)) = bn_affine(g, id, bn) else { return Ok(None) };
        let mut p = Patch::new();
        let Some(y) = fold_after(g, x.node, Some(&scale), Some(&shift), &mut p) else { return Ok(None) };
        p.replace(ValueId::new(id, 0), y);
        Ok(Some(p))
    }
}

/// A BatchNormalization with constant parameters that could not fold becomes a scale and a shift
/// (Mul then Add by constants shaped to broadcast over the channel dim), which later passes fold
/// or fuse.
pub struct BatchNormToAffine;

impl Pass for BatchNormToAffine {
    fn name(&self) -> &'static str {
        "batchnorm-to-affine"
    }
    fn description(&self) -> &'static str {
        "turn a BatchNormalization with constant parameters into Mul + Add"
    }
    fn rewrite(&self, g: &Graph, id: NodeId, _: &PassContext) -> Result<Option<Patch>, OpError> {
        let node = g.node(id);
        let Op::BatchNorm(bn) = &node.op else { return Ok(None) };
        let Some(x) = node.inputs()[0] else { return Ok(None) };
        let p: Option<Vec<Vec<f64>>> = (1..5).map(|i| const_f64(g, node.inputs().get(i).copied().flatten())).collect();
        let Some(p) = p else { return Ok(None) };
        let pshape = g.const_value(node.inputs()[1].unwrap_or(x)).map(|t| t.shape().to_vec()).unwrap_or_default();
        let eps = bn.epsilon as f64;
        let scale: Vec<f64> = (0..p[0].len()).map(|i| p[0][i] / (p[3][i] + eps).sqrt()).collect();
        let shift: Vec<f64> = (0..p[0].len()).map(|i| p[1][i] - p[2][i] * scale[i]).collect();
        // [C] becomes [C, 1, ..] so that it broadcasts over dim 1; [C, spatial..] already does.
        let rank = g.ty(x).rank();
        let mut shape = pshape.clone();
        if pshape.len() == 1 {
            shape.resize(rank - 1, 1);
        }
        let dtype = g.ty(x).dtype;
        let mut patch = Patch::new();
        let s = patch.add_const(&format!("{}/scale", node.name), float_tensor(dtype, shape.clone(), scale));
        let t = patch.add_const(&format!("{}/shift", node.name), float_tensor(dtype, shape, shift));
        let m = patch.add(&format!("{}/mul", node.name), Op::Binary(Binary::Mul), vec![x.into(), s]);
        let y = patch.add(&node.name, Op::Binary(Binary::Add), vec![m, t]);
        patch.replace(ValueId::new(id, 0), y);
        Ok(Some(patch))
    }
}

/// For `Mul`/`Add` node `id`: its non-constant operand and, if the other operand is a per-channel
/// constant for it, the C values.
fn affine_operand(g: &Graph, id: NodeId) -> Option<(ValueId, Vec<f64>)> {
    let node = g.node(id);
    let (a, b) = (node.inputs().first().copied().flatten()?, node.inputs().get(1).copied().flatten()?);
    for (x, c) in [(a, b), (b, a)] {
        if g.const_value(x).is_some() {
            continue;
        }
        let ty = g.ty(x);
        if ty.rank() < 2 || ty != g.ty(ValueId::new(id, 0)) {
            continue;
        }
        let channels = dim(g, x, 1)?;
        if let Some(v) = per_channel(g, c, ty.rank(), channels) {
            return Some((x, v));
        }
    }
    None
}

/// Per-channel Mul or Add by a constant right after a linear op folds into its weights or bias
/// (what tf2onnx leaves of BatchNorm after depthwise convs and biased convs).
pub struct FoldAffineAfter;

impl Pass for FoldAffineAfter {
    fn name(&self) -> &'static str {
        "fold-affine"
    }
    fn description(&self) -> &'static str {
        "fold per-channel Mul/Add by constants into the preceding Conv/ConvTranspose/Gemm/MatMul"
    }
    fn rewrite(&self, g: &Graph, id: NodeId, _: &PassContext) -> Result<Option<Patch>, OpError> {
        let Op::Binary(kind @ (Binary::Mul | Binary::Add)) = g.node(id).op else { return Ok(None) };
        let Some((x, v)) = affine_operand(g, id) else { return Ok(None) };
        if !is_linear(&g.node(x.node).op) || single_user(g, x).is_none() {
            return Ok(None);
        }
        let mut p = Patch::new();
        let y = match kind {
            Binary::Mul => fold_after(g, x.node, Some(&v), None, &mut p),
            _ => fold_after(g, x.node, None, Some(&v), &mut p),
        };
        let Some(y) = y else { return Ok(None) };
        p.replace(ValueId::new(id, 0), y);
        Ok(Some(p))
    }
}

/// Per-input-channel Mul or Add by a constant right before a Conv folds into the Conv: a scale
/// always (padding zeros stay zero), a shift only when the Conv has no padding.
pub struct FoldAffineBefore;

impl Pass for FoldAffineBefore {
    fn name(&self) -> &'static str {
        "fold-affine-before-conv"
    }
    fn description(&self) -> &'static str {
        "fold a per-channel Mul (any padding) or Add (no padding) into the following Conv"
    }
    fn rewrite(&self, g: &Graph, id: NodeId, _: &PassContext) -> Result<Option<Patch>, OpError> {
        let node = g.node(id);
        let Op::Conv(conv) = &node.op else { return Ok(None) };
        let Some(xv) = node.inputs()[0] else { return Ok(None) };
        if single_user(g, xv).is_none() {
            return Ok(None);
        }
        let Op::Binary(kind @ (Binary::Mul | Binary::Add)) = g.node(xv.node).op else { return Ok(None) };
        let Some((x, v)) = affine_operand(g, xv.node) else { return Ok(None) };
        let Some(wv) = node.inputs().get(1).copied().flatten() else { return Ok(None) };
        let Some(w) = g.const_value(wv) else { return Ok(None) };
        let Some(wf) = const_f64(g, Some(wv)) else { return Ok(None) };
        let bias = match node.inputs().get(2).copied().flatten() {
            Some(b) => match const_f64(g, Some(b)) {
                Some(b) => Some(b),
                None => return Ok(None),
            },
            None => None,
        };
        let ws = w.shape().to_vec();
        let (m, cg) = (ws[0], ws[1]);
        let inner: usize = ws[2..].iter().product();
        let mg = m / conv.group;
        // Input channel of weight element i.
        let input_channel = |i: usize| (i / (cg * inner)) / mg * cg + (i / inner) % cg;
        let mut p = Patch::new();
        let dtype = w.dtype();
        let (w2, b2) = match kind {
            Binary::Mul => {
                let new_w: Vec<f64> = wf.iter().enumerate().map(|(i, &x)| x * v[input_channel(i)]).collect();
                let w2 = p.add_const(&format!("{}/folded", g.value(wv).name), float_tensor(dtype, ws.clone(), new_w));
                (w2, node.inputs().get(2).copied().flatten().map(PatchValue::from))
            }
            _ => {
                if conv.window.pads.iter().any(|&q| q != 0) {
                    return Ok(None);
                }
                let mut b = bias.unwrap_or_else(|| vec![0.0; m]);
                for (i, &x) in wf.iter().enumerate() {
                    b[i / (cg * inner)] += x * v[input_channel(i)];
                }
                let b2 = p.add_const(&format!("{}/folded_bias", node.name), float_tensor(dtype, vec![m], b));
                (PatchValue::Old(wv), Some(b2))
            }
        };
        let mut inputs = vec![x.into(), w2];
        inputs.extend(b2);
        let y = p.add(&node.name, Op::Conv(Conv { ..conv.clone() }), inputs);
        p.replace(ValueId::new(id, 0), y);
        Ok(Some(p))
    }
}
