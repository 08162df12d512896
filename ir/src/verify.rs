//! The verifier: structural and type checks that every graph must pass (run after import, after
//! parsing, and after every pass).

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::format::format_type;
use crate::graph::{Graph, ValueId};
use crate::infer::{KnownValues, infer_op, learn_values};
use crate::ops::Op;

/// Checks that the graph is acyclic, every input refers to an existing value, the record of uses
/// mirrors the input slots, value names are unique, and every node's recorded output types are what its op infers.
pub fn verify(g: &Graph) -> Result<()> {
    let fail = |msg: String| Err(Error::Verify(msg));
    let order = g.topo_order()?;
    if !g.uses_match_inputs() {
        return fail("the record of uses does not match the nodes' inputs".into());
    }
    let mut names = HashSet::new();
    for &id in &order {
        let node = g.node(id);
        for v in &node.outputs {
            if !names.insert(v.name.as_str()) {
                return fail(format!("value '{}' is defined more than once", v.name));
            }
            if g.value_by_name(&v.name)
                != Some(ValueId::new(id, node.outputs.iter().position(|o| o.name == v.name).unwrap_or(0)))
            {
                return fail(format!("value '{}' is missing from the name table", v.name));
            }
        }
        for v in node.input_values() {
            if !g.contains(v.node) || v.slot >= g.node(v.node).outputs.len() {
                return fail(format!("node '{}' reads a value that does not exist", node.name));
            }
        }
        if matches!(node.op, Op::Input(_)) && !g.inputs().contains(&id) {
            return fail(format!("input node '{}' is not a graph input", node.name));
        }
    }
    for &v in g.outputs() {
        if !g.contains(v.node) || v.slot >= g.node(v.node).outputs.len() {
            return fail("a graph output refers to a value that does not exist".into());
        }
    }
    if g.outputs().is_empty() {
        return fail("the graph has no outputs".into());
    }
    let mut known = KnownValues::default();
    for &id in &order {
        let node = g.node(id);
        if matches!(node.op, Op::Input(_)) {
            continue;
        }
        let mut op = node.op.clone();
        let types = infer_op(g, &mut op, node.inputs(), node.outputs.len(), &known)
            .map_err(|e| Error::Verify(format!("node '{}' ({}): {e}", node.name, node.op.name())))?;
        for (v, t) in node.outputs.iter().zip(&types) {
            if v.ty != *t {
                return fail(format!(
                    "node '{}' ({}): output '{}' is recorded as {} but its inputs give {}",
                    node.name,
                    node.op.name(),
                    v.name,
                    format_type(&v.ty),
                    format_type(t)
                ));
            }
        }
        learn_values(g, &node.op, node.inputs(), &types, id, &mut known);
    }
    Ok(())
}
