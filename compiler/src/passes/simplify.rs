//! Exact clean-ups: Identity and Dropout removal, dead code elimination, common subexpression
//! elimination, constant folding (with the reference interpreter's op code).

use std::collections::HashMap;

use incept_ir::graph::{Graph, NodeId, ValueId};
use incept_ir::{DType, Op, OpError, Tensor};

use crate::passes::util::can_stand_in_for;
use crate::passes::{Pass, PassContext, Patch};

/// Removes Identity, and Dropout (inference), whose mask output becomes a constant of trues.
pub struct RemoveIdentity;

impl Pass for RemoveIdentity {
    fn name(&self) -> &'static str {
        "remove-identity"
    }
    fn description(&self) -> &'static str {
        "drop Identity and inference-mode Dropout nodes"
    }
    fn rewrite(&self, g: &Graph, id: NodeId, _: &PassContext) -> Result<Option<Patch>, OpError> {
        let node = g.node(id);
        if !matches!(node.op, Op::Identity(_) | Op::Dropout(_)) {
            return Ok(None);
        }
        let Some(x) = node.inputs().first().copied().flatten() else { return Ok(None) };
        let out = ValueId::new(id, 0);
        if !can_stand_in_for(g, out, x) {
            return Ok(None);
        }
        let mut p = Patch::new();
        p.replace(out, x);
        if node.outputs.len() == 2 {
            let mask = ValueId::new(id, 1);
            if g.is_used(mask) {
                let Some(dims) = g.ty(mask).static_dims() else { return Ok(None) };
                let n = dims.iter().product();
                let c = p.add_const(&format!("{}/mask", node.name), Tensor::from_bools(dims, vec![true; n]));
                p.replace(mask, c);
            }
        }
        Ok(Some(p))
    }
}

/// Removes nodes whose outputs nothing uses (including unused initializers).
pub struct DeadCode;

impl Pass for DeadCode {
    fn name(&self) -> &'static str {
        "dead-code"
    }
    fn description(&self) -> &'static str {
        "remove nodes and constants that no output depends on"
    }
    fn rewrite(&self, g: &Graph, id: NodeId, _: &PassContext) -> Result<Option<Patch>, OpError> {
        let node = g.node(id);
        if matches!(node.op, Op::Input(_)) || (0..node.outputs.len()).any(|s| g.is_used(ValueId::new(id, s))) {
            return Ok(None);
        }
        let mut p = Patch::new();
        p.remove(id);
        Ok(Some(p))
    }
}

/// A key that is equal for nodes computing the same thing from the same inputs.
fn op_key(op: &Op) -> Option<String> {
    match op {
        Op::Input(_) | Op::Const(_) => None,
        op => {
            let attrs: Vec<String> = op.attrs().iter().map(|(k, v)| format!("{k}={v}")).collect();
            Some(format!("{}{{{}}}", op.name(), attrs.join(",")))
        }
    }
}

/// Constants by a fingerprint that is cheap whatever their size (dtype, shape, first and last
/// bytes): the constants that may equal a given one, without comparing it with every node. Filled
/// as CSE visits constants; entries are checked against the graph when read.
#[derive(Default)]
pub struct ConstIndex(std::sync::Mutex<HashMap<ConstKey, Vec<NodeId>>>);

type ConstKey = (DType, Vec<usize>, Vec<u8>, Vec<u8>);

fn const_key(t: &Tensor) -> ConstKey {
    let b = t.bytes();
    let n = b.len().min(32);
    (t.dtype(), t.shape().to_vec(), b[..n].to_vec(), b[b.len() - n..].to_vec())
}

impl ConstIndex {
    /// Records `id` (a constant holding `value`) and returns the earliest-indexed other constant
    /// of the graph with the same contents, if any is known.
    fn twin(&self, g: &Graph, id: NodeId, value: &Tensor) -> Option<NodeId> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = map.entry(const_key(value)).or_default();
        // Entries removed from the graph, or no longer constants, drop out as they are met.
        bucket.retain(|&m| g.contains(m) && matches!(&g.node(m).op, Op::Const(_)));
        if !bucket.contains(&id) {
            bucket.push(id);
        }
        bucket
            .iter()
            .copied()
            .filter(|&m| m.index() < id.index())
            .filter(|&m| matches!(&g.node(m).op, Op::Const(d) if d.value.same_content(value)))
            .min_by_key(|m| m.index())
    }
}

/// Merges nodes that compute the same op on the same inputs, and equal constants.
pub struct CommonSubexpr;

impl Pass for CommonSubexpr {
    fn name(&self) -> &'static str {
        "cse"
    }
    fn description(&self) -> &'static str {
        "merge identical computations and identical constants"
    }
    fn rewrite(&self, g: &Graph, id: NodeId, cx: &PassContext) -> Result<Option<Patch>, OpError> {
        let node = g.node(id);
        let twin = match &node.op {
            Op::Input(_) => None,
            Op::Const(c) => cx.consts.twin(g, id, &c.value),
            op => {
                // A twin reads every input of this node: look among the users of the input
                // that has the fewest.
                let Some(&fewest) = node.inputs().iter().flatten().min_by_key(|&&v| g.user_count(v)) else {
                    return Ok(None);
                };
                let key = op_key(op);
                g.users(fewest).into_iter().map(|(m, _)| m).find(|&m| {
                    m.index() < id.index()
                        && g.node(m).inputs() == node.inputs()
                        && g.node(m).outputs.len() == node.outputs.len()
                        && op_key(&g.node(m).op) == key
                })
            }
        };
        let Some(twin) = twin else { return Ok(None) };
        let mut p = Patch::new();
        for slot in 0..node.outputs.len() {
            let (old, new) = (ValueId::new(id, slot), ValueId::new(twin, slot));
            if !can_stand_in_for(g, old, new) {
                return Ok(None);
            }
            p.replace(old, new);
        }
        Ok(Some(p))
    }
}

/// Largest result constant folding creates beyond the size of its inputs, so that folding never
/// bloats the model (e.g. by expanding a ConstantOfShape).
const FOLD_GROWTH: usize = 1 << 16;

/// Evaluates nodes whose inputs are all constants (and Shape of a static shape) with the reference
/// semantics, replacing them by constants. This folds the shape subgraphs exporters emit.
pub struct ConstantFold;

impl Pass for ConstantFold {
    fn name(&self) -> &'static str {
        "const-fold"
    }
    fn description(&self) -> &'static str {
        "evaluate nodes whose inputs are constants (shape subgraphs included)"
    }
    fn rewrite(&self, g: &Graph, id: NodeId, _: &PassContext) -> Result<Option<Patch>, OpError> {
        let node = g.node(id);
        let values: Vec<Tensor> = match &node.op {
            Op::Input(_) | Op::Const(_) => return Ok(None),
            Op::Shape(s) => {
                let Some(x) = node.inputs().first().copied().flatten() else { return Ok(None) };
                match s.value(&g.ty(x).shape) {
                    Some(t) => vec![t],
                    None => return Ok(None),
                }
            }
            op => {
                let mut args = Vec::with_capacity(node.inputs().len());
                let mut in_size = 0;
                for i in node.inputs() {
                    match i {
                        None => args.push(None),
                        Some(v) => match g.const_value(*v) {
                            Some(t) => {
                                in_size += t.numel();
                                args.push(Some(t));
                            }
                            None => return Ok(None),
                        },
                    }
                }
                let out_size: usize = node.outputs.iter().map(|v| v.ty.numel().unwrap_or(usize::MAX)).sum();
                if out_size > in_size.max(FOLD_GROWTH) {
                    return Ok(None);
                }
                op.eval(&args)?
            }
        };
        let mut p = Patch::new();
        for (slot, t) in values.into_iter().take(node.outputs.len()).enumerate() {
            let old = ValueId::new(id, slot);
            if !g.is_used(old) {
                continue;
            }
            let c = p.add_const(&node.outputs[slot].name, t);
            p.replace(old, c);
        }
        Ok(Some(p))
    }
}
