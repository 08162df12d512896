//! The reference interpreter: evaluates a graph node by node with each op's reference semantics.
//! It is the oracle for passes and kernels, so it favours clarity over speed, and checks every
//! result against the types shape inference promised.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::format::format_type;
use crate::graph::{Graph, ValueId, node_error};
use crate::ops::Op;
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;

/// Checks a tensor against a declared type, binding symbolic dims consistently.
pub fn check_type(name: &str, t: &Tensor, want: &TensorType, syms: &mut HashMap<String, usize>) -> Result<()> {
    let bad = |msg: String| Error::Input { name: name.to_string(), msg };
    if t.dtype() != want.dtype {
        return Err(bad(format!("expected type {}, got {}", want.dtype, t.dtype())));
    }
    let got = format!("[{}]", t.shape().iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","));
    if t.rank() != want.rank() {
        return Err(bad(format!("expected shape {}, got {got}", format_type(want))));
    }
    for (d, &n) in want.shape.iter().zip(t.shape()) {
        match d {
            Dim::Known(k) if *k != n => return Err(bad(format!("expected shape {}, got {got}", format_type(want)))),
            Dim::Sym(s) => {
                if let Some(&prev) = syms.get(s)
                    && prev != n
                {
                    return Err(bad(format!("dimension {s} is {prev} in another input but {n} here (shape {got})")));
                }
                syms.insert(s.clone(), n);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Matches user inputs to graph inputs: by name when every tensor is named, by order otherwise.
pub fn bind_inputs(g: &Graph, inputs: Vec<(Option<String>, Tensor)>) -> Result<Vec<Tensor>> {
    let names = g.input_names();
    if inputs.len() != names.len() {
        return Err(Error::Model(format!(
            "the model has {} input(s) ({}), {} given",
            names.len(),
            names.join(", "),
            inputs.len()
        )));
    }
    if inputs.iter().all(|(n, _)| n.is_some()) {
        let mut by_name: HashMap<String, Tensor> = inputs.into_iter().filter_map(|(n, t)| n.map(|n| (n, t))).collect();
        names
            .iter()
            .map(|n| {
                by_name.remove(n).ok_or_else(|| Error::Input {
                    name: n.clone(),
                    msg: format!("not given (given: {})", by_name.keys().cloned().collect::<Vec<_>>().join(", ")),
                })
            })
            .collect()
    } else {
        Ok(inputs.into_iter().map(|(_, t)| t).collect())
    }
}

/// Runs the graph on inputs given in graph-input order; returns the outputs in order.
pub fn run(g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    run_observed(g, inputs, |_, _| {})
}

/// Like [`run`], calling `observe(node name, outputs)` after every node (for tracing and tests).
pub fn run_observed(g: &Graph, inputs: &[Tensor], mut observe: impl FnMut(&str, &[Tensor])) -> Result<Vec<Tensor>> {
    let in_ids = g.inputs();
    if inputs.len() != in_ids.len() {
        return Err(Error::Model(format!("the model has {} input(s), {} given", in_ids.len(), inputs.len())));
    }
    let mut syms = HashMap::new();
    let mut env: HashMap<ValueId, Tensor> = HashMap::new();
    for (&id, t) in in_ids.iter().zip(inputs) {
        let v = &g.node(id).outputs[0];
        check_type(&v.name, t, &v.ty, &mut syms)?;
        env.insert(ValueId::new(id, 0), t.clone());
    }
    let order = g.topo_order()?;
    // Remaining uses of each value, so intermediates are freed as soon as possible.
    let mut uses: HashMap<ValueId, usize> = HashMap::new();
    for &id in &order {
        for v in g.node(id).input_values() {
            *uses.entry(v).or_default() += 1;
        }
    }
    for &v in g.outputs() {
        *uses.entry(v).or_default() += 1;
    }
    for &id in &order {
        let node = g.node(id);
        if matches!(node.op, Op::Input(_)) {
            continue;
        }
        let args: Vec<Option<&Tensor>> = node
            .inputs()
            .iter()
            .map(|i| {
                i.map(|v| {
                    env.get(&v).ok_or_else(|| {
                        Error::Model(format!("node '{}' reads a value that was not computed", node.name))
                    })
                })
                .transpose()
            })
            .collect::<Result<_>>()?;
        let outs = node.op.eval(&args).map_err(|e| node_error(node, e))?;
        if outs.len() < node.outputs.len() {
            return Err(Error::Model(format!(
                "node '{}' produced {} outputs, {} declared",
                node.name,
                outs.len(),
                node.outputs.len()
            )));
        }
        let outs: Vec<Tensor> = outs.into_iter().take(node.outputs.len()).collect();
        for (t, v) in outs.iter().zip(&node.outputs) {
            let mut local = syms.clone();
            check_type(&v.name, t, &v.ty, &mut local).map_err(|e| {
                Error::Model(format!(
                    "internal error: node '{}' ({}) computed a result that disagrees with shape inference: {e}",
                    node.name,
                    node.op.name()
                ))
            })?;
        }
        observe(&node.name, &outs);
        for v in node.input_values() {
            if let Some(u) = uses.get_mut(&v) {
                *u -= 1;
                if *u == 0 {
                    env.remove(&v);
                }
            }
        }
        for (slot, t) in outs.into_iter().enumerate() {
            let v = ValueId::new(id, slot);
            if uses.get(&v).copied().unwrap_or(0) > 0 {
                env.insert(v, t);
            }
        }
    }
    g.outputs()
        .iter()
        .map(|v| {
            env.get(v).cloned().ok_or_else(|| Error::Model(format!("output '{}' was not computed", g.value(*v).name)))
        })
        .collect()
}
