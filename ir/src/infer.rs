//! The shape inference driver: runs each op's `infer` with the types of its inputs and, where known
//! at compile time, their values. Values flow through small constant subgraphs (the Shape -> Gather
//! -> Concat -> Reshape chains exporters emit), so that shapes computed from other shapes are known.

use std::collections::HashMap;

use crate::error::OpError;
use crate::graph::{Graph, NodeId, ValueId};
use crate::ops::{InferCx, InferInput, Op};
use crate::shape::TensorType;
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
