//! The graph IR: a petgraph `StableGraph` of nodes, each an [`Op`] with ordered inputs and typed
//! outputs. Graph inputs and constants are nodes too (`Op::Input`, `Op::Const`), so every value
//! has exactly one producer and every use is recorded. The uses of each value are kept in an
//! ordered set beside the nodes (not as petgraph edges, whose removal walks the source's whole
//! edge list: a value read by 100,000 nodes made every rewrite near it cost 100,000 steps).

use std::collections::{BTreeSet, HashMap, HashSet};

use petgraph::stable_graph::{NodeIndex, StableGraph};

use crate::error::{Error, OpError, Result};
use crate::ops::{Const, InputOp, Op};
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;

pub type NodeId = NodeIndex<u32>;

/// One output of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId {
    pub node: NodeId,
    pub slot: usize,
}

impl ValueId {
    pub fn new(node: NodeId, slot: usize) -> ValueId {
        ValueId { node, slot }
    }
}

/// A named, typed value.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub name: String,
    pub ty: TensorType,
}

/// One op application.
#[derive(Clone, Debug)]
pub struct Node {
    /// The node's name (from ONNX, or generated); used in error messages.
    pub name: String,
    pub op: Op,
    inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<Value>,
    /// Creation order, for a stable topological order.
    seq: u64,
}

impl Node {
    /// Input slots in order; `None` is an omitted optional input.
    pub fn inputs(&self) -> &[Option<ValueId>] {
        &self.inputs
    }

    /// The present inputs, in order.
    pub fn input_values(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.inputs.iter().flatten().copied()
    }
}

/// A dataflow graph with static or symbolic shapes.
#[derive(Clone, Debug)]
pub struct Graph {
    pub name: String,
    g: StableGraph<Node, ()>,
    inputs: Vec<NodeId>,
    outputs: Vec<ValueId>,
    names: HashMap<String, ValueId>,
    /// Every (node, input slot) that reads each value, mirroring the nodes' inputs.
    uses: HashMap<ValueId, BTreeSet<(NodeId, usize)>>,
    next_seq: u64,
}

impl Graph {
    pub fn new(name: &str) -> Graph {
        Graph {
            name: name.to_string(),
            g: StableGraph::new(),
            inputs: vec![],
            outputs: vec![],
            names: HashMap::new(),
            uses: HashMap::new(),
            next_seq: 0,
        }
    }

    fn check_name(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(Error::Model("a value has an empty name".into()));
        }
        if self.names.contains_key(name) {
            return Err(Error::Model(format!("value '{name}' is defined more than once")));
        }
        Ok(())
    }

    /// Adds a node whose output types are already known. Inputs must exist.
    pub fn add_node_typed(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        outputs: Vec<Value>,
    ) -> Result<NodeId> {
        for o in &outputs {
            self.check_name(&o.name)?;
        }
        let mut seen = HashSet::new();
        if let Some(dup) = outputs.iter().find(|o| !seen.insert(o.name.as_str())) {
            return Err(Error::Model(format!("node '{name}' defines value '{}' twice", dup.name)));
        }
        for v in inputs.iter().flatten() {
            if !self.g.contains_node(v.node) || v.slot >= self.g[v.node].outputs.len() {
                return Err(Error::Model(format!("node '{name}' reads a value that does not exist")));
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = self.g.add_node(Node { name: name.to_string(), op, inputs: inputs.clone(), outputs, seq });
        for (slot, v) in self.g[id].outputs.iter().enumerate() {
            self.names.insert(v.name.clone(), ValueId::new(id, slot));
        }
        for (slot, v) in inputs.iter().enumerate() {
            if let Some(v) = v {
                self.uses.entry(*v).or_default().insert((id, slot));
            }
        }
        Ok(id)
    }

    /// Adds a graph input.
    pub fn add_input(&mut self, name: &str, ty: TensorType) -> Result<ValueId> {
        let id = self.add_node_typed(name, Op::Input(InputOp), vec![], vec![Value { name: name.to_string(), ty }])?;
        self.inputs.push(id);
        Ok(ValueId::new(id, 0))
    }

    /// Adds a constant.
    pub fn add_const(&mut self, name: &str, value: Tensor) -> Result<ValueId> {
        let ty = TensorType::known(value.dtype(), value.shape());
        let id =
            self.add_node_typed(name, Op::Const(Const { value }), vec![], vec![Value { name: name.to_string(), ty }])?;
        Ok(ValueId::new(id, 0))
    }

    /// Removes a node. Its outputs must have no users left (graph outputs count as users).
    pub fn remove_node(&mut self, id: NodeId) -> Result<Node> {
        let Some(node) = self.g.node_weight(id) else { return Err(Error::Model("no such node".into())) };
        if (0..node.outputs.len()).any(|slot| self.is_used(ValueId::new(id, slot))) {
            return Err(Error::Model(format!("cannot remove node '{}': its outputs are still used", node.name)));
        }
        let node = self.g.remove_node(id).ok_or_else(|| Error::Model("no such node".into()))?;
        for (slot, v) in node.inputs.iter().enumerate() {
            if let Some(v) = v {
                self.unuse(*v, id, slot);
            }
        }
        for (slot, v) in node.outputs.iter().enumerate() {
            self.names.remove(&v.name);
            self.uses.remove(&ValueId::new(id, slot));
        }
        self.inputs.retain(|&i| i != id);
        Ok(node)
    }

    /// Points input `slot` of `node` at another value (or at nothing).
    pub fn set_input(&mut self, node: NodeId, slot: usize, value: Option<ValueId>) {
        if let Some(old) = self.g[node].inputs.get(slot).copied().flatten() {
            self.unuse(old, node, slot);
        }
        if let Some(v) = value {
            self.uses.entry(v).or_default().insert((node, slot));
        }
        let inputs = &mut self.g[node].inputs;
        if slot >= inputs.len() {
            inputs.resize(slot + 1, None);
        }
        inputs[slot] = value;
    }

    /// Replaces every use of `old` (including graph outputs) with `new`.
    pub fn replace_uses(&mut self, old: ValueId, new: ValueId) {
        for (node, slot) in self.users(old) {
            self.set_input(node, slot, Some(new));
        }
        for o in &mut self.outputs {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Renames a value; the new name must be unused.
    pub fn rename_value(&mut self, v: ValueId, name: &str) -> Result<()> {
        if self.value(v).name == name {
            return Ok(());
        }
        self.check_name(name)?;
        let old = std::mem::replace(&mut self.g[v.node].outputs[v.slot].name, name.to_string());
        self.names.remove(&old);
        self.names.insert(name.to_string(), v);
        Ok(())
    }

    /// True when some node reads `v` or it is a graph output.
    pub fn is_used(&self, v: ValueId) -> bool {
        self.outputs.contains(&v) || self.uses.get(&v).is_some_and(|u| !u.is_empty())
    }

    /// Every (node, input slot) that reads `v`, sorted.
    pub fn users(&self, v: ValueId) -> Vec<(NodeId, usize)> {
        self.uses.get(&v).map(|u| u.iter().copied().collect()).unwrap_or_default()
    }

    /// How many (node, input slot) pairs read `v`.
    pub fn user_count(&self, v: ValueId) -> usize {
        self.uses.get(&v).map_or(0, BTreeSet::len)
    }

    fn unuse(&mut self, v: ValueId, node: NodeId, slot: usize) {
        if let Some(u) = self.uses.get_mut(&v) {
            u.remove(&(node, slot));
            if u.is_empty() {
                self.uses.remove(&v);
            }
        }
    }

    /// Whether the record of uses is exactly the nodes' inputs (for the verifier).
    pub(crate) fn uses_match_inputs(&self) -> bool {
        let mut recorded = 0;
        for id in self.g.node_indices() {
            for (slot, v) in self.g[id].inputs.iter().enumerate() {
                if let Some(v) = v {
                    if !self.uses.get(v).is_some_and(|u| u.contains(&(id, slot))) {
                        return false;
                    }
                    recorded += 1;
                }
            }
        }
        recorded == self.uses.values().map(BTreeSet::len).sum::<usize>()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }

    /// Mutable access to a node's name, op and output values (inputs change through
    /// [`Graph::set_input`] so that edges stay in sync).
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id]
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id)
    }

    pub fn value(&self, v: ValueId) -> &Value {
        &self.g[v.node].outputs[v.slot]
    }

    pub fn ty(&self, v: ValueId) -> &TensorType {
        &self.value(v).ty
    }

    /// The value of a constant, if `v` is one.
    pub fn const_value(&self, v: ValueId) -> Option<&Tensor> {
        match &self.g[v.node].op {
            Op::Const(c) => Some(&c.value),
            _ => None,
        }
    }

    pub fn value_by_name(&self, name: &str) -> Option<ValueId> {
        self.names.get(name).copied()
    }

    /// A value name not used yet, derived from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        if !self.names.contains_key(base) && !base.is_empty() {
            return base.to_string();
        }
        (1..).map(|i| format!("{base}_{i}")).find(|n| !self.names.contains_key(n)).unwrap_or_default()
    }

    /// Graph input nodes in order.
    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    /// Graph input values in order.
    pub fn input_values(&self) -> Vec<ValueId> {
        self.inputs.iter().map(|&n| ValueId::new(n, 0)).collect()
    }

    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    pub fn set_outputs(&mut self, outputs: Vec<ValueId>) {
        self.outputs = outputs;
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// All node ids, in no particular order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices()
    }

    /// Nodes in a deterministic topological order: among ready nodes the oldest comes first, so an
    /// imported graph keeps the model's own order. Errors on a cycle, naming nodes on it.
    pub fn topo_order(&self) -> Result<Vec<NodeId>> {
        let mut indeg: HashMap<NodeId, usize> = HashMap::new();
        for id in self.g.node_indices() {
            indeg.insert(id, self.g[id].inputs.iter().flatten().count());
        }
        let mut ready: BTreeSet<(u64, NodeId)> =
            indeg.iter().filter(|(_, d)| **d == 0).map(|(&id, _)| (self.g[id].seq, id)).collect();
        let mut order = Vec::with_capacity(self.g.node_count());
        while let Some(first) = ready.pop_first() {
            let id = first.1;
            order.push(id);
            for slot in 0..self.g[id].outputs.len() {
                for &(t, _) in self.uses.get(&ValueId::new(id, slot)).into_iter().flatten() {
                    if let Some(d) = indeg.get_mut(&t) {
                        *d -= 1;
                        if *d == 0 {
                            ready.insert((self.g[t].seq, t));
                        }
                    }
                }
            }
        }
        if order.len() != self.g.node_count() {
            let placed: HashSet<NodeId> = order.iter().copied().collect();
            let mut stuck: Vec<&str> =
                self.g.node_indices().filter(|i| !placed.contains(i)).map(|i| self.g[i].name.as_str()).collect();
            stuck.sort();
            stuck.truncate(8);
            return Err(Error::Verify(format!("the graph has a cycle through nodes {}", stuck.join(", "))));
        }
        Ok(order)
    }

    pub fn input_names(&self) -> Vec<String> {
        self.inputs.iter().map(|&i| self.g[i].outputs[0].name.clone()).collect()
    }

    /// Symbols that appear in any value's shape.
    pub fn symbols(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for id in self.g.node_indices() {
            for v in &self.g[id].outputs {
                for d in &v.ty.shape {
                    if let Dim::Sym(s) = d {
                        out.insert(s.clone());
                    }
                }
            }
        }
        out
    }
}

/// Wraps an op error with the node it came from.
pub fn node_error(node: &Node, e: OpError) -> Error {
    Error::node(&node.name, node.op.name(), e)
}
