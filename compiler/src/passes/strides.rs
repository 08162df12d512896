//! Computing a value only where it is read: when every reader of a value samples it at a stride
//! (1x1 convs with strides > 1, or strided Slices), the value's producer takes the stride
//! instead, and the readers read every element of the smaller value.
//!
//! Keras' ResNet50 (v1) downsamples with 1x1 stride-2 convs on both branches of each stage's
//! first block, so the last block of the stage before computes three times the positions anyone
//! reads; OpenVINO's CPU plugin does the same rewrite. Every element that is kept is computed
//! from the same inputs by the same formula, so the rewrite is exact.

use incept_ir::OpError;
use incept_ir::Tensor;
use incept_ir::graph::{Graph, NodeId, ValueId};
use incept_ir::ops::conv::{AutoPad, Window};
use incept_ir::ops::{Conv, Op};

use crate::passes::util::dim;
use crate::passes::{Pass, PassContext, Patch, PatchValue};

/// Moves a stride from the strided readers of a value into the conv or pool that makes it, or
/// through the elementwise ops between them (their other full-size operands get a strided
/// Slice, which the rule then moves up in turn where it can).
pub struct HoistStrides;

/// The known shape of a value.
fn shape(g: &Graph, v: ValueId) -> Option<Vec<usize>> {
    (0..g.ty(v).shape.len()).map(|i| dim(g, v, i)).collect()
}

/// The step per spatial dim (dims 2..) at which node `u` reads its input 0 of shape `s`, when it
/// reads nothing else of it: a 1x1 conv without pads, or a Slice that starts at 0, runs to the
/// end and steps only spatial dims.
fn reader_steps(g: &Graph, u: NodeId, s: &[usize]) -> Option<Vec<usize>> {
    let node = g.node(u);
    let n = s.len() - 2;
    match &node.op {
        // 1x1 windows need no padding whatever auto_pad says.
        Op::Conv(c) if c.window.kernel == vec![1; n] && c.window.pads.iter().all(|&p| p == 0) => {
            Some(c.window.strides.clone())
        }
        Op::Slice(_) => {
            let ints = |i: usize| node.inputs().get(i).copied().flatten().map(|v| g.const_value(v)?.to_i64s().ok());
            let starts = ints(1)??;
            let ends = ints(2)??;
            let axes = match ints(3) {
                None => (0..starts.len() as i64).collect(),
                Some(a) => a?,
            };
            let steps = match ints(4) {
                None => vec![1; starts.len()],
                Some(st) => st?,
            };
            let mut out = vec![1usize; n];
            let mut seen = vec![false; s.len()];
            for i in 0..starts.len() {
                let ax = if axes[i] < 0 { axes[i] + s.len() as i64 } else { axes[i] };
                let ax = usize::try_from(ax).ok().filter(|&a| a < s.len())?;
                let whole = starts[i] == 0 && ends[i] >= s[ax] as i64 && steps[i] >= 1 && !seen[ax];
                seen[ax] = true;
                match ax {
                    _ if !whole => return None,
                    0 | 1 if steps[i] != 1 => return None,
                    0 | 1 => {}
                    _ => out[ax - 2] = steps[i] as usize,
                }
            }
            Some(out)
        }
        _ => None,
    }
}

/// The one step vector with which every reader of `v` samples it (some step above 1), when
/// all of them are strided readers alike and `v` is not a graph output.
fn common_steps(g: &Graph, v: ValueId) -> Option<Vec<usize>> {
    let s = shape(g, v)?;
    if s.len() < 3 || g.outputs().contains(&v) {
        return None;
    }
    let users = g.users(v);
    let mut common: Option<Vec<usize>> = None;
    for &(u, slot) in &users {
        let steps = reader_steps(g, u, &s).filter(|_| slot == 0)?;
        if common.as_ref().is_some_and(|c| *c != steps) {
            return None;
        }
        common = Some(steps);
    }
    common.filter(|c| c.iter().any(|&x| x > 1))
}

/// A Slice of `v` (rank `rank`) keeping every `steps[i]`-th element of its last `steps.len()`
/// dims.
fn strided_slice(p: &mut Patch, name: &str, v: ValueId, steps: &[usize]) -> PatchValue {
    let n = steps.len();
    let ints = |vals: Vec<i64>| Tensor::from_vec(vec![n], vals);
    let starts = p.add_const(&format!("{name}.starts"), ints(vec![0; n]));
    let ends = p.add_const(&format!("{name}.ends"), ints(vec![i64::MAX; n]));
    let axes = p.add_const(&format!("{name}.axes"), ints((0..n as i64).map(|i| i - n as i64).collect()));
    let st = p.add_const(&format!("{name}.steps"), ints(steps.iter().map(|&x| x as i64).collect()));
    p.add(name, Op::Slice(incept_ir::ops::Slice), vec![v.into(), starts, ends, axes, st])
}

impl Pass for HoistStrides {
    fn name(&self) -> &'static str {
        "hoist-strides"
    }
    fn description(&self) -> &'static str {
        "compute a value only at the positions its strided 1x1 convs read: the stride moves into the conv or pool that makes it (exact)"
    }
    fn rewrite(&self, g: &Graph, id: NodeId, _: &PassContext) -> Result<Option<Patch>, OpError> {
        let node = g.node(id);
        if node.outputs.len() != 1 {
            return Ok(None);
        }
        let v = ValueId::new(id, 0);
        let Some(steps) = common_steps(g, v) else { return Ok(None) };
        let n = steps.len();
        // Readers that are Slices hand their output over to the new value, which takes over a
        // graph output's name: two such outputs would become one.
        let users = g.users(v);
        let slice_outputs = users
            .iter()
            .filter(|&&(u, _)| matches!(g.node(u).op, Op::Slice(_)) && g.outputs().contains(&ValueId::new(u, 0)))
            .count();
        if slice_outputs > 1 {
            return Ok(None);
        }
        let mut p = Patch::new();
        let inputs: Vec<Option<PatchValue>> = node.inputs().iter().map(|i| i.map(Into::into)).collect();
        // Strides multiply: sampling a window op's output at step s is the op at stride t * s
        // (with floor division on both sides the counts agree). "SAME" pads depend on the
        // stride, and ceil mode's last window may start in the padding: those are left alone.
        let strided = |window: &Window| {
            let mut w = window.clone();
            w.strides.iter_mut().zip(&steps).for_each(|(t, s)| *t *= s);
            w
        };
        let fixed_pads = |a: AutoPad| matches!(a, AutoPad::NotSet | AutoPad::Valid);
        let new = match &node.op {
            Op::Conv(c) if c.window.strides.len() == n && fixed_pads(c.window.auto_pad) => {
                p.add_node(&node.name, Op::Conv(Conv { window: strided(&c.window), group: c.group }), inputs, 1)[0]
            }
            Op::Pool(pool) if pool.window.strides.len() == n && !pool.ceil_mode && fixed_pads(pool.window.auto_pad) => {
                let mut pool = pool.clone();
                pool.window = strided(&pool.window);
                p.add_node(&node.name, Op::Pool(pool), inputs, 1)[0]
            }
            Op::Unary(_) | Op::Clip(_) | Op::Binary(_) | Op::Variadic(_) | Op::Cast(_) => {
                let out = shape(g, v).unwrap_or_default();
                let mut new_inputs = Vec::with_capacity(inputs.len());
                for (slot, i) in node.inputs().iter().enumerate() {
                    let Some(x) = *i else {
                        new_inputs.push(None);
                        continue;
                    };
                    let Some(xs) = shape(g, x) else { return Ok(None) };
                    // Right-aligned as broadcasting aligns them: an operand that is constant across
                    // the spatial dims stays; one that runs along them with the output is sampled.
                    let spatial: Vec<usize> =
                        (0..n).map(|i| (xs.len() + i).checked_sub(n).map_or(1, |d| xs[d])).collect();
                    if spatial.iter().all(|&d| d == 1) {
                        new_inputs.push(Some(x.into()));
                    } else if xs.len() >= n && spatial == out[out.len() - n..] {
                        new_inputs.push(Some(strided_slice(&mut p, &format!("{}.in{slot}", node.name), x, &steps)));
                    } else {
                        return Ok(None);
                    }
                }
                p.add_node(&node.name, node.op.clone(), new_inputs, 1)[0]
            }
            _ => return Ok(None),
        };
        p.succeed(v, new);
        for (u, _) in users {
            let reader = g.node(u);
            match &reader.op {
                Op::Conv(c) => {
                    let mut c = c.clone();
                    c.window.strides = vec![1; n];
                    let mut ins: Vec<Option<PatchValue>> = reader.inputs().iter().map(|i| i.map(Into::into)).collect();
                    ins[0] = Some(new);
                    let out = p.add_node(&reader.name, Op::Conv(c), ins, 1)[0];
                    p.replace(ValueId::new(u, 0), out);
                }
                _ => p.replace(ValueId::new(u, 0), new),
            }
        }
        Ok(Some(p))
    }
}
