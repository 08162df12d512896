//! Patches: what a rewrite rule returns. A patch adds nodes, redirects the uses of old values to
//! new ones, and names nodes to remove; the pass manager applies it and sweeps away whatever the
//! rewrite left dead.

use incept_ir::graph::{Graph, NodeId, ValueId};
use incept_ir::{Op, Tensor};

use crate::passes::PassError;

/// A value a patch refers to: one already in the graph, or an output of a node the patch adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchValue {
    Old(ValueId),
    New { node: usize, slot: usize },
}

impl From<ValueId> for PatchValue {
    fn from(v: ValueId) -> PatchValue {
        PatchValue::Old(v)
    }
}

#[derive(Clone, Debug)]
struct NewNode {
    name: String,
    op: Op,
    inputs: Vec<Option<PatchValue>>,
    n_outputs: usize,
}

/// A set of graph changes produced by one rule application.
#[derive(Clone, Debug, Default)]
pub struct Patch {
    nodes: Vec<NewNode>,
    replacements: Vec<(ValueId, PatchValue)>,
    removals: Vec<NodeId>,
    /// New values that take an old value's name once the old one is gone (the old one has
    /// another type, so it cannot be a replacement).
    successors: Vec<(ValueId, PatchValue)>,
}

impl Patch {
    pub fn new() -> Patch {
        Patch::default()
    }

    /// Adds a node; `name` is a hint (made unique on application). Returns its outputs.
    pub fn add_node(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<Option<PatchValue>>,
        n_outputs: usize,
    ) -> Vec<PatchValue> {
        self.nodes.push(NewNode { name: name.to_string(), op, inputs, n_outputs });
        let node = self.nodes.len() - 1;
        (0..n_outputs).map(|slot| PatchValue::New { node, slot }).collect()
    }

    /// Adds a one-output node and returns its output.
    pub fn add(&mut self, name: &str, op: Op, inputs: Vec<PatchValue>) -> PatchValue {
        self.add_node(name, op, inputs.into_iter().map(Some).collect(), 1)[0]
    }

    /// Adds a constant.
    pub fn add_const(&mut self, name: &str, value: Tensor) -> PatchValue {
        self.add(name, Op::Const(incept_ir::ops::Const { value }), vec![])
    }

    /// Every use of `old` (and a graph output that is `old`) switches to `new`.
    pub fn replace(&mut self, old: ValueId, new: impl Into<PatchValue>) {
        self.replacements.push((old, new.into()));
    }

    /// `new` takes over `old`'s name if the patch leaves `old` dead: a value the rewrite changed
    /// (say, in shape) without a use of it being replaced.
    pub fn succeed(&mut self, old: ValueId, new: PatchValue) {
        self.successors.push((old, new));
    }

    /// Removes a node (only if nothing uses it by the end of the patch).
    pub fn remove(&mut self, node: NodeId) {
        self.removals.push(node);
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.replacements.is_empty() && self.removals.is_empty()
    }

    /// Applies the patch. Replacements must keep types; graph outputs keep their names.
    pub(crate) fn apply(self, g: &mut Graph, pass: &'static str, at: &str) -> Result<(), PassError> {
        let fail = |msg: String| PassError::Patch { pass, node: at.to_string(), msg };
        let mut created: Vec<NodeId> = Vec::with_capacity(self.nodes.len());
        let resolve = |created: &[NodeId], v: PatchValue| -> Result<ValueId, PassError> {
            match v {
                PatchValue::Old(v) => Ok(v),
                PatchValue::New { node, slot } => created
                    .get(node)
                    .map(|&n| ValueId::new(n, slot))
                    .ok_or_else(|| fail(format!("refers to node {node} before it is added"))),
            }
        };
        for n in self.nodes {
            let inputs =
                n.inputs.iter().map(|i| i.map(|v| resolve(&created, v)).transpose()).collect::<Result<Vec<_>, _>>()?;
            let outputs: Vec<String> = (0..n.n_outputs)
                .map(
                    |i| if n.n_outputs == 1 { g.fresh_name(&n.name) } else { g.fresh_name(&format!("{}:{i}", n.name)) },
                )
                .collect();
            let node_name = n.name.clone();
            let id = g.add_node(&node_name, n.op, inputs, outputs).map_err(|e| PassError::Patch {
                pass,
                node: at.to_string(),
                msg: e.to_string(),
            })?;
            created.push(id);
        }
        let mut candidates: Vec<NodeId> = self.removals.clone();
        let mut renames: Vec<(ValueId, String, bool)> = vec![];
        for (old, new_ref) in self.replacements {
            let new = resolve(&created, new_ref)?;
            if g.ty(old) != g.ty(new) {
                return Err(fail(format!(
                    "replaces {} ({}) with {} ({}), a different type",
                    g.value(old).name,
                    incept_ir::format::format_type(g.ty(old)),
                    g.value(new).name,
                    incept_ir::format::format_type(g.ty(new))
                )));
            }
            // A graph output keeps its name, and a value made by the patch takes over the name of
            // the value it replaces, so names stay stable through rewrites.
            let is_output = g.outputs().contains(&old);
            if is_output || matches!(new_ref, PatchValue::New { .. }) {
                renames.push((new, g.value(old).name.clone(), is_output));
            }
            g.replace_uses(old, new);
            candidates.push(old.node);
        }
        let successors = self
            .successors
            .iter()
            .map(|&(old, new)| Ok((old, resolve(&created, new)?, g.value(old).name.clone())))
            .collect::<Result<Vec<_>, PassError>>()?;
        remove_dead(g, candidates);
        // A successor's name comes before the names of the values it replaces.
        let mut first: Vec<(ValueId, String, bool)> = successors
            .into_iter()
            .filter(|(old, _, _)| !g.contains(old.node))
            .map(|(_, new, name)| (new, name, false))
            .collect();
        first.append(&mut renames);
        let mut renames = first;
        // Output names win over the others; each value is renamed once.
        renames.sort_by_key(|r| std::cmp::Reverse(r.2));
        let mut renamed = std::collections::HashSet::new();
        for (v, name, _) in renames {
            if g.contains(v.node) && g.value_by_name(&name).is_none() && renamed.insert(v) {
                g.rename_value(v, &name).map_err(|e| fail(e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// Removes the candidates that nothing uses, then their producers that become unused, and so on.
/// Graph inputs stay.
pub fn remove_dead(g: &mut Graph, mut candidates: Vec<NodeId>) {
    while let Some(id) = candidates.pop() {
        if !g.contains(id) || matches!(g.node(id).op, Op::Input(_)) {
            continue;
        }
        let n = g.node(id).outputs.len();
        if (0..n).any(|slot| g.is_used(ValueId::new(id, slot))) {
            continue;
        }
        let producers: Vec<NodeId> = g.node(id).input_values().map(|v| v.node).collect();
        if g.remove_node(id).is_ok() {
            candidates.extend(producers);
        }
    }
}
