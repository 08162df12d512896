//! Folding an explicit constant Pad into the following Conv, AveragePool or MaxPool (zeros),
//! QLinearConv and ConvInteger (their input's zero point, which is what their own padding
//! adds), or an integer MaxPool (the type's low end, which its own padding acts as).

use incept_ir::OpError;
use incept_ir::graph::{Graph, NodeId, ValueId};
use incept_ir::ops::pad::PadMode;
use incept_ir::ops::quant::qrange;
use incept_ir::ops::{Op, PoolKind, Unary};

use crate::passes::util::{const_f64, single_user};
use crate::passes::{Pass, PassContext, Patch};

/// The spatial (begin..., end...) pads of a constant Pad node that pads only dims 2.., and its
/// value (0 when absent), or None.
fn spatial_pads(g: &Graph, pad: NodeId) -> Option<(Vec<usize>, f64)> {
    let node = g.node(pad);
    let Op::Pad(p) = &node.op else { return None };
    if p.mode != PadMode::Constant || node.inputs().get(3).copied().flatten().is_some() {
        return None; // other modes, or the axes form
    }
    let value = match node.inputs().get(2).copied().flatten() {
        Some(v) => one_value(g, v)?,
        None => 0.0,
    };
    let pads = g.const_value(node.inputs().get(1).copied().flatten()?)?.to_i64s().ok()?;
    let rank = pads.len() / 2;
    if rank < 3 || pads.iter().any(|&q| q < 0) || pads[0] != 0 || pads[1] != 0 || pads[rank] != 0 || pads[rank + 1] != 0
    {
        return None;
    }
    let n = rank - 2;
    let mut out: Vec<usize> = pads[2..rank].iter().map(|&q| q as usize).collect();
    out.extend(pads[rank + 2..].iter().map(|&q| q as usize));
    (out.len() == 2 * n).then_some((out, value))
}

/// The input zero point of a QLinearConv or ConvInteger (slot 2; 0 when absent), if constant
/// and one value.
fn input_zero(g: &Graph, id: NodeId) -> Option<f64> {
    match g.node(id).inputs().get(2).copied().flatten() {
        Some(z) => one_value(g, z),
        None => Some(0.0),
    }
}

/// A constant of one element, of any numeric type.
fn one_value(g: &Graph, v: ValueId) -> Option<f64> {
    match g.const_value(v)?.to_f64s().ok()?.as_slice() {
        [x] => Some(*x),
        _ => None,
    }
}

/// True when every element of `v` is known to be >= 0 (it comes out of a Relu, or a Clip whose
/// lower bound is >= 0): then zero padding never wins a max.
fn non_negative(g: &Graph, v: ValueId) -> bool {
    let node = g.node(v.node);
    match &node.op {
        Op::Unary(Unary::Relu) => true,
        Op::Clip(_) => node
            .inputs()
            .get(1)
            .copied()
            .flatten()
            .and_then(|lo| const_f64(g, Some(lo)))
            .is_some_and(|lo| lo.first().is_some_and(|&l| l >= 0.0)),
        _ => false,
    }
}

/// Pad(x, zeros) -> Conv/AveragePool/MaxPool becomes the op's own pads where that computes the same:
/// always for Conv (and for QLinearConv and ConvInteger when the Pad's value is their input's
/// zero point); for AveragePool when the pool counts padding (or has none of its own, and
/// then counts it); for MaxPool when x is non-negative and every window still sees a real element.
pub struct FoldPad;

impl Pass for FoldPad {
    fn name(&self) -> &'static str {
        "fold-pad"
    }
    fn description(&self) -> &'static str {
        "merge an explicit zero Pad into the following Conv or pool's pads (the zero point's Pad into a QLinearConv or ConvInteger)"
    }
    fn rewrite(&self, g: &Graph, id: NodeId, _: &PassContext) -> Result<Option<Patch>, OpError> {
        let node = g.node(id);
        let Some(pv) = node.inputs().first().copied().flatten() else { return Ok(None) };
        if single_user(g, pv).is_none() {
            return Ok(None);
        }
        let Some((extra, value)) = spatial_pads(g, pv.node) else { return Ok(None) };
        let Some(x) = g.node(pv.node).inputs()[0] else { return Ok(None) };
        // The integer convs pad with their input's zero point; an integer max pool ignores its
        // padding, as the type's low end would (also the reference's result for a window of
        // padding alone); the others pad with zeros.
        let low_end = qrange(g.ty(x).dtype).map(|(lo, _)| lo as f64);
        let int_max = matches!(&node.op, Op::Pool(p) if p.kind == PoolKind::Max) && low_end.is_some();
        let expected = match node.op {
            Op::QLinearConv(_) | Op::ConvInteger(_) => input_zero(g, id).unwrap_or(f64::NAN),
            _ if int_max => low_end.unwrap_or(f64::NAN),
            _ => 0.0,
        };
        if value != expected {
            return Ok(None);
        }
        let add = |pads: &[usize]| -> Vec<usize> { pads.iter().zip(&extra).map(|(a, b)| a + b).collect() };
        let op = match &node.op {
            Op::Conv(c) if c.window.pads.len() == extra.len() => {
                let mut c = c.clone();
                c.window.pads = add(&c.window.pads);
                Op::Conv(c)
            }
            Op::QLinearConv(q) if q.conv.window.pads.len() == extra.len() => {
                let mut q = q.clone();
                q.conv.window.pads = add(&q.conv.window.pads);
                Op::QLinearConv(q)
            }
            Op::ConvInteger(q) if q.conv.window.pads.len() == extra.len() => {
                let mut q = q.clone();
                q.conv.window.pads = add(&q.conv.window.pads);
                Op::ConvInteger(q)
            }
            Op::Pool(p) if p.window.pads.len() == extra.len() => {
                let mut p = p.clone();
                match p.kind {
                    PoolKind::Avg => {
                        if !p.count_include_pad && p.window.pads.iter().any(|&q| q != 0) {
                            return Ok(None);
                        }
                        p.count_include_pad = true;
                    }
                    PoolKind::Max => {
                        let n = extra.len() / 2;
                        let fits = (0..n).all(|i| {
                            p.window.dilations[i] == 1
                                && extra[i] + p.window.pads[i] < p.window.kernel[i]
                                && extra[n + i] + p.window.pads[n + i] < p.window.kernel[i]
                        });
                        if g.node(id).outputs.len() > 1 || (!int_max && (!non_negative(g, x) || !fits)) {
                            return Ok(None);
                        }
                    }
                }
                p.window.pads = add(&p.window.pads);
                Op::Pool(p)
            }
            _ => return Ok(None),
        };
        let mut inputs: Vec<Option<_>> = node.inputs().iter().map(|i| i.map(Into::into)).collect();
        inputs[0] = Some(x.into());
        let mut p = Patch::new();
        let outs = p.add_node(&node.name, op, inputs, node.outputs.len());
        for (slot, v) in outs.into_iter().enumerate() {
            p.replace(ValueId::new(id, slot), v);
        }
        Ok(Some(p))
    }
}
