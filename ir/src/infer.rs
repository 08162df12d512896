//! The shape inference driver: runs each op's `infer` with the types of its inputs and, where known
//! at compile time, their values. Values flow through small constant subgraphs (the Shape -> Gather
//! -> Concat -> Reshape chains exporters emit), so that shapes computed from other shapes are known.

use std::collections::HashMap;

use crate::error::{Error, OpError, Result};
use crate::graph::{Graph, NodeId, Value, ValueId};
use crate::ops::{InferCx, InferInput, Op};
use crate::shape::{Dim, TensorType};
use crate::tensor::{Tensor, nonzero_numel};

/// Values known at compile time beyond the graph's constants.
#[derive(Default)]
pub struct KnownValues {
    map: HashMap<ValueId, Tensor>,
}

impl KnownValues {
    pub fn get<'a>(&'a self, g: &'a Graph, v: ValueId) -> Option<&'a Tensor> {
        g.const_value(v).or_else(|| self.map.get(&v))
    }
}

/// Largest tensors that inference evaluates to learn values: shape arithmetic is tiny, and this
/// keeps import fast and bounded whatever the model contains.
const MAX_LEARNED_ELEMENTS: usize = 1 << 16;

/// Infers the output types of `op` applied to `inputs`, checking the declared output count and
/// refusing absurd sizes.
pub fn infer_op(
    g: &Graph,
    op: &mut Op,
    inputs: &[Option<ValueId>],
    n_outputs: usize,
    known: &KnownValues,
) -> Result<Vec<TensorType>, OpError> {
    let ins: Vec<Option<InferInput>> =
        inputs.iter().map(|v| v.map(|v| InferInput { ty: g.ty(v), value: known.get(g, v) })).collect();
    let cx = InferCx::new(&ins, n_outputs);
    let mut types = op.infer(&cx)?;
    if types.len() < n_outputs {
        return Err(OpError::Invalid(format!("declares {n_outputs} outputs, the op has {}", types.len())));
    }
    types.truncate(n_outputs);
    for t in &types {
        if nonzero_numel(t.shape.iter().filter_map(|d| d.known())).is_none() {
            return Err(OpError::Invalid(format!("output {t} has more than 2^31 elements (not counting empty dims)")));
        }
    }
    Ok(types)
}

/// After inferring a node, records the values of its outputs when they can be known at compile
/// time: `Shape` of a static shape, and small ops whose inputs are all known.
pub fn learn_values(
    g: &Graph,
    op: &Op,
    inputs: &[Option<ValueId>],
    types: &[TensorType],
    id: NodeId,
    known: &mut KnownValues,
) {
    if let Op::Shape(s) = op {
        if let Some(v) = inputs.first().copied().flatten()
            && let Some(t) = s.value(&g.ty(v).shape)
        {
            known.map.insert(ValueId::new(id, 0), t);
        }
        return;
    }
    if matches!(op, Op::Input(_) | Op::Const(_)) {
        return;
    }
    let small = |t: &TensorType| t.numel().is_some_and(|n| n <= MAX_LEARNED_ELEMENTS);
    if !types.iter().all(small) {
        return;
    }
    let mut vals = Vec::with_capacity(inputs.len());
    for v in inputs {
        match v {
            None => vals.push(None),
            Some(v) => match known.get(g, *v) {
                Some(t) if t.numel() <= MAX_LEARNED_ELEMENTS => vals.push(Some(t.clone())),
                _ => return,
            },
        }
    }
    let refs: Vec<Option<&Tensor>> = vals.iter().map(|v| v.as_ref()).collect();
    // An evaluation error here is reported when the graph runs; inference only learns what it can.
    if let Ok(outs) = op.eval(&refs) {
        for (slot, t) in outs.into_iter().take(types.len()).enumerate() {
            known.map.insert(ValueId::new(id, slot), t);
        }
    }
}

/// The graph's inference entry points live here, beside the driver they call, so that the graph
/// itself depends only on the ops it holds.
impl Graph {
    /// Adds a node, inferring its output types from its inputs (constant inputs are visible to
    /// inference). `output_names` gives the number of outputs.
    pub fn add_node(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        output_names: Vec<String>,
    ) -> Result<NodeId> {
        self.add_node_known(name, op, inputs, output_names, &mut KnownValues::default())
    }

    /// Like [`Graph::add_node`], with values learned from earlier nodes visible to inference (and
    /// this node's learned in turn), as when building a graph node by node.
    pub fn add_node_known(
        &mut self,
        name: &str,
        mut op: Op,
        inputs: Vec<Option<ValueId>>,
        output_names: Vec<String>,
        known: &mut KnownValues,
    ) -> Result<NodeId> {
        let types =
            infer_op(self, &mut op, &inputs, output_names.len(), known).map_err(|e| Error::node(name, op.name(), e))?;
        let outputs =
            output_names.into_iter().zip(types.iter().cloned()).map(|(name, ty)| Value { name, ty }).collect();
        let id = self.add_node_typed(name, op, inputs, outputs)?;
        let node = self.node(id);
        learn_values(self, &node.op, node.inputs(), &types, id, known);
        Ok(id)
    }

    /// Binds symbolic dims (e.g. `N = 1`) in the graph inputs and re-runs shape inference.
    pub fn bind_dims(&mut self, bindings: &HashMap<String, usize>) -> Result<()> {
        for id in self.inputs().to_vec() {
            let ty = self.node(id).outputs[0].ty.bind(bindings);
            self.node_mut(id).outputs[0].ty = ty;
        }
        self.infer_shapes()
    }

    /// Sets the shape of a graph input (by name) and re-runs shape inference.
    pub fn set_input_shape(&mut self, name: &str, dims: &[usize]) -> Result<()> {
        let id =
            *self.inputs().iter().find(|&&i| self.node(i).outputs[0].name == name).ok_or_else(|| Error::Input {
                name: name.into(),
                msg: format!("no such graph input (inputs: {})", self.input_names().join(", ")),
            })?;
        let old = self.node(id).outputs[0].ty.clone();
        if old.rank() != dims.len() {
            return Err(Error::Input {
                name: name.into(),
                msg: format!("has rank {}, the given shape {dims:?} has {}", old.rank(), dims.len()),
            });
        }
        for (d, &n) in old.shape.iter().zip(dims) {
            if let Dim::Known(k) = d
                && *k != n
            {
                return Err(Error::Input {
                    name: name.into(),
                    msg: format!("has fixed shape {old}, cannot set {dims:?}"),
                });
            }
        }
        self.node_mut(id).outputs[0].ty = TensorType::known(old.dtype, dims);
        self.infer_shapes()
    }

    /// Re-infers every node's output types in topological order (after inputs changed).
    pub fn infer_shapes(&mut self) -> Result<()> {
        let mut known = KnownValues::default();
        for id in self.topo_order()? {
            let node = self.node(id);
            if matches!(node.op, Op::Input(_)) {
                continue;
            }
            let (mut op, inputs, n) = (node.op.clone(), node.inputs().to_vec(), node.outputs.len());
            let types = infer_op(self, &mut op, &inputs, n, &known)
                .map_err(|e| Error::node(&self.node(id).name, op.name(), e))?;
            learn_values(self, &op, &inputs, &types, id, &mut known);
            let node = self.node_mut(id);
            node.op = op;
            for (v, t) in node.outputs.iter_mut().zip(types) {
                v.ty = t;
            }
        }
        Ok(())
    }
}
