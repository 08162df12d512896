//! Building the graph IR from a decoded ONNX model.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use crate::attrs::{AttrValue, Attrs};
use crate::dtype::DType;
use crate::error::{Error, OpError, Result, UnsupportedOp};
use crate::format::format_type;
use crate::graph::{Graph, ValueId};
use crate::infer::KnownValues;
use crate::onnx::functions::{FlatNode, flatten};
use crate::onnx::legacy::Upgrade;
use crate::onnx::proto::{AttributeProto, ModelProto, TypeValue, ValueInfoProto, attribute_type as at};
use crate::onnx::tensor::{ExternalData, tensor_from_proto};
use crate::onnx::{ImportOptions, MAX_IR_VERSION, MIN_IR_VERSION};
use crate::ops::onnx_ops;
use crate::ops::{MAX_OPSET, MIN_OPSET, MS_DOMAIN, MS_OPS, Op, domain_op_info};
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;

fn is_default_domain(d: &str) -> bool {
    d.is_empty() || d == "ai.onnx"
}

/// Converts a decoded model into a graph with inferred shapes.
pub fn import_model(model: &ModelProto, ext: &ExternalData, opts: &ImportOptions) -> Result<Graph> {
    if model.ir_version == 0 {
        return Err(Error::Model("ir_version is missing; this does not look like an ONNX model".into()));
    }
    if !(MIN_IR_VERSION..=MAX_IR_VERSION).contains(&model.ir_version) {
        return Err(Error::Model(format!(
            "IR version {} is not supported (incept reads IR versions {MIN_IR_VERSION} to {MAX_IR_VERSION})",
            model.ir_version
        )));
    }
    let opset = model
        .opset_import
        .iter()
        .find(|o| is_default_domain(&o.domain))
        .map(|o| o.version)
        .ok_or_else(|| Error::Model("the model imports no ai.onnx opset".into()))?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(Error::Model(format!(
            "ai.onnx opset {opset} is not supported (incept reads opsets {MIN_OPSET} to {MAX_OPSET})"
        )));
    }
    let graph = model.graph.as_ref().ok_or_else(|| Error::Model("the model has no graph".into()))?;
    if !graph.sparse_initializer.is_empty() {
        return Err(Error::Model("sparse initializers are not supported".into()));
    }
    let nodes = flatten(model, &graph.node)?;
    check_supported(&nodes)?;

    let mut g = Graph::new(if graph.name.is_empty() { "main" } else { &graph.name });
    let init_names: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    // Old models list initializers among the inputs as well; they are constants here.
    for vi in graph.input.iter().filter(|vi| !init_names.contains(vi.name.as_str())) {
        let ty = input_type(vi, opts)?;
        match opts.frozen_inputs.get(&vi.name) {
            Some(t) => {
                let mut syms = HashMap::new();
                crate::interp::check_type(&vi.name, t, &ty, &mut syms)?;
                g.add_const(&vi.name, t.clone())?;
            }
            None => {
                g.add_input(&vi.name, ty)?;
            }
        }
    }
    for name in opts.frozen_inputs.keys() {
        if !graph.input.iter().any(|vi| &vi.name == name) {
            return Err(Error::Input { name: name.clone(), msg: "is frozen but is not a graph input".into() });
        }
    }
    for name in opts.input_shapes.keys() {
        if !graph.input.iter().any(|vi| &vi.name == name && !init_names.contains(vi.name.as_str())) {
            let names: Vec<String> = g.input_names();
            return Err(Error::Input {
                name: name.clone(),
                msg: format!("no such graph input (inputs: {})", names.join(", ")),
            });
        }
    }
    for t in &graph.initializer {
        if t.name.is_empty() {
            return Err(Error::Model("an initializer has no name".into()));
        }
        let value = tensor_from_proto(t, ext)?;
        g.add_const(&t.name, value)?;
    }

    let mut known = KnownValues::default();
    for i in order_nodes(&nodes, &g)? {
        import_node(&mut g, &nodes[i], ext, &mut known)?;
    }

    let mut outputs = Vec::with_capacity(graph.output.len());
    for vi in &graph.output {
        let v = g
            .value_by_name(&vi.name)
            .ok_or_else(|| Error::Model(format!("graph output '{}' is not produced by any node", vi.name)))?;
        check_declared(&g, v, vi)?;
        outputs.push(v);
    }
    if outputs.is_empty() {
        return Err(Error::Model("the graph has no outputs".into()));
    }
    g.set_outputs(outputs);
    Ok(g)
}

/// Fails with one error listing every unsupported op type, its domain, opset and nodes.
fn check_supported(nodes: &[FlatNode]) -> Result<()> {
    let mut bad: BTreeMap<(String, String), UnsupportedOp> = BTreeMap::new();
    for n in nodes {
        let p = &n.proto;
        let name = if p.name.is_empty() { p.output.first().cloned().unwrap_or_default() } else { p.name.clone() };
        let op = &p.op_type;
        let reason = if is_default_domain(&p.domain) {
            match (domain_op_info("", op), n.opset) {
                (None, opset) => Some(onnx_ops::unsupported_reason(op, opset)),
                (Some(_), None) => {
                    Some(format!("ONNX operator '{op}' needs the ai.onnx domain, which is not imported"))
                }
                (Some(info), Some(v)) if info.since > v => Some(format!(
                    "ONNX operator '{op}' is not defined in opset {v} (introduced in opset {})",
                    info.since
                )),
                _ => None,
            }
        } else if p.domain == MS_DOMAIN {
            match domain_op_info(MS_DOMAIN, op) {
                Some(_) => None,
                None => Some(format!(
                    "'{op}' is not an ONNX operator: it is a custom operator of domain '{MS_DOMAIN}' (ONNX \
                     Runtime's contrib operators), of which incept imports only the quantized ones: {}",
                    MS_OPS.iter().map(|o| o.name).collect::<Vec<_>>().join(", ")
                )),
            }
        } else if p.domain == "ai.onnx.ml" {
            Some(format!("'{op}' is an ONNX-ML operator (domain ai.onnx.ml), which incept does not support"))
        } else {
            Some(format!(
                "'{op}' is not an ONNX operator: it is a custom operator of domain '{}', and incept imports only ai.onnx",
                p.domain
            ))
        };
        if let Some(reason) = reason {
            let opset = if is_default_domain(&p.domain) { n.opset } else { n.domain_opset };
            bad.entry((p.domain.clone(), p.op_type.clone()))
                .or_insert_with(|| UnsupportedOp {
                    op_type: p.op_type.clone(),
                    domain: p.domain.clone(),
                    opset,
                    nodes: vec![],
                    reason,
                })
                .nodes
                .push(name);
        }
    }
    if bad.is_empty() { Ok(()) } else { Err(Error::UnsupportedOps(bad.into_values().collect())) }
}

fn input_type(vi: &ValueInfoProto, opts: &ImportOptions) -> Result<TensorType> {
    let bad = |msg: String| Error::Input { name: vi.name.clone(), msg };
    let tt = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(t)) => t,
        Some(_) => return Err(bad("is not a tensor (sequences, maps and optionals are not supported)".into())),
        None => return Err(bad("has no type".into())),
    };
    let dtype = DType::from_onnx(tt.elem_type)
        .ok_or_else(|| bad(format!("has unsupported element type {}", DType::onnx_code_name(tt.elem_type))))?;
    let user = opts.input_shapes.get(&vi.name);
    let Some(shape) = tt.shape.as_ref() else {
        return match user {
            Some(dims) => Ok(TensorType::known(dtype, dims)),
            None => Err(bad(format!(
                "has no shape in the model; give one with ImportOptions::input_shapes[\"{}\"]",
                vi.name
            ))),
        };
    };
    let mut dims = Vec::with_capacity(shape.dim.len());
    for (i, d) in shape.dim.iter().enumerate() {
        use crate::onnx::proto::DimensionValue as DV;
        dims.push(match &d.value {
            Some(DV::DimValue(v)) if *v >= 0 => Dim::Known(*v as usize),
            Some(DV::DimValue(v)) => return Err(bad(format!("has negative dimension {v}"))),
            Some(DV::DimParam(p)) if !p.is_empty() => match opts.dims.get(p) {
                Some(&n) => Dim::Known(n),
                None => Dim::Sym(p.clone()),
            },
            _ => Dim::Sym(format!("{}_dim{i}", vi.name)),
        });
    }
    let known: Vec<usize> = dims.iter().filter_map(Dim::known).collect();
    if crate::tensor::checked_numel(&known).is_none() {
        return Err(bad(format!("shape {} has more than 2^31 elements", shape_text(&dims))));
    }
    if let Some(user) = user {
        if crate::tensor::checked_numel(user).is_none() {
            return Err(bad(format!("the given shape {user:?} has more than 2^31 elements")));
        }
        if user.len() != dims.len() {
            return Err(bad(format!("has rank {}, the given shape {user:?} has {}", dims.len(), user.len())));
        }
        for (d, &u) in dims.iter().zip(user) {
            if let Dim::Known(k) = d
                && *k != u
            {
                let ty = format_type(&TensorType::new(dtype, dims.clone()));
                return Err(bad(format!("has fixed shape {ty}, cannot set {user:?}")));
            }
        }
        return Ok(TensorType::known(dtype, user));
    }
    Ok(TensorType::new(dtype, dims))
}

fn shape_text(dims: &[Dim]) -> String {
    format!("[{}]", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","))
}

/// Orders node indices so that every value is produced before it is read, keeping the model's
/// order where it already is one. Reports undefined values and cycles.
fn order_nodes(nodes: &[FlatNode], g: &Graph) -> Result<Vec<usize>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.proto.output.iter().filter(|o| !o.is_empty()) {
            if producer.insert(o.as_str(), i).is_some() || g.value_by_name(o).is_some() {
                return Err(Error::Model(format!("value '{o}' is defined more than once")));
            }
        }
    }
    let mut waiting = vec![0usize; nodes.len()];
    let mut users: Vec<Vec<usize>> = vec![vec![]; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for inp in n.proto.input.iter().filter(|s| !s.is_empty()) {
            if let Some(&p) = producer.get(inp.as_str()) {
                waiting[i] += 1;
                users[p].push(i);
            } else if g.value_by_name(inp).is_none() {
                let name = node_name(&n.proto);
                return Err(Error::Node {
                    node: name,
                    op: n.proto.op_type.clone(),
                    error: OpError::Invalid(format!(
                        "reads value '{inp}', which no node, input or initializer defines"
                    )),
                });
            }
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..nodes.len()).filter(|&i| waiting[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &u in &users[i] {
            waiting[u] -= 1;
            if waiting[u] == 0 {
                ready.push(Reverse(u));
            }
        }
    }
    if order.len() != nodes.len() {
        let stuck: Vec<String> = (0..nodes.len())
            .filter(|&i| waiting[i] > 0)
            .take(8)
            .map(|i| format!("'{}'", node_name(&nodes[i].proto)))
            .collect();
        return Err(Error::Model(format!("the graph has a cycle through nodes {}", stuck.join(", "))));
    }
    Ok(order)
}

fn node_name(p: &crate::onnx::proto::NodeProto) -> String {
    if !p.name.is_empty() {
        return p.name.clone();
    }
    p.output.iter().find(|o| !o.is_empty()).cloned().unwrap_or_else(|| p.op_type.clone())
}

fn import_node(g: &mut Graph, n: &FlatNode, ext: &ExternalData, known: &mut KnownValues) -> Result<()> {
    let p = &n.proto;
    let name = node_name(p);
    let wrap = |e: OpError| Error::node(&name, &p.op_type, e);
    let mut attrs = Attrs::default();
    for a in &p.attribute {
        let v = attr_value(a, ext).map_err(|e| wrap(OpError::Invalid(format!("attribute '{}': {e}", a.name))))?;
        attrs.insert(&a.name, v);
    }
    let mut outputs: Vec<String> = p.output.clone();
    while outputs.last().is_some_and(|o| o.is_empty()) {
        outputs.pop();
    }
    if outputs.is_empty() {
        return Err(wrap(OpError::Invalid("has no outputs".into())));
    }
    for (i, o) in outputs.iter_mut().enumerate() {
        if o.is_empty() {
            *o = g.fresh_name(&format!("{name}/unused{i}"));
        }
    }

    if p.op_type == "Constant" {
        let t = constant_value(attrs).map_err(wrap)?;
        if outputs.len() != 1 {
            return Err(wrap(OpError::Invalid("a Constant has one output".into())));
        }
        let v = g.add_const(&outputs[0], t)?;
        g.node_mut(v.node).name = name;
        return Ok(());
    }

    let mut inputs: Vec<Option<ValueId>> =
        p.input.iter().map(|s| if s.is_empty() { None } else { g.value_by_name(s) }).collect();
    let opset = n.opset.unwrap_or(MAX_OPSET);
    // Older ai.onnx forms are rewritten to the current one; com.microsoft ops have one form.
    let op_type = if p.domain == MS_DOMAIN {
        p.op_type.as_str()
    } else {
        Upgrade { graph: g, node: &name, opset, attrs: &mut attrs, inputs: &mut inputs }
            .run(&p.op_type)
            .map_err(wrap)?
    };
    while inputs.last().is_some_and(|i| i.is_none()) {
        inputs.pop();
    }
    let op = Op::from_attrs(op_type, attrs).map_err(wrap)?;
    g.add_node_known(&name, op, inputs, outputs, known)?;
    Ok(())
}

fn attr_value(a: &AttributeProto, ext: &ExternalData) -> std::result::Result<AttrValue, String> {
    let utf8 = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8".to_string());
    let kind = if a.r#type != at::UNDEFINED {
        a.r#type
    } else if !a.floats.is_empty() {
        at::FLOATS
    } else if !a.ints.is_empty() {
        at::INTS
    } else if !a.strings.is_empty() {
        at::STRINGS
    } else if a.t.is_some() {
        at::TENSOR
    } else if !a.s.is_empty() {
        at::STRING
    } else if a.f != 0.0 {
        at::FLOAT
    } else {
        at::INT
    };
    Ok(match kind {
        at::FLOAT => AttrValue::Float(a.f),
        at::INT => AttrValue::Int(a.i),
        at::STRING => AttrValue::Str(utf8(&a.s)?),
        at::FLOATS => AttrValue::Floats(a.floats.clone()),
        at::INTS => AttrValue::Ints(a.ints.clone()),
        at::STRINGS => AttrValue::Strs(a.strings.iter().map(|s| utf8(s)).collect::<std::result::Result<_, _>>()?),
        at::TENSOR => {
            let t = a.t.as_ref().ok_or("tensor attribute without a tensor")?;
            AttrValue::Tensor(tensor_from_proto(t, ext).map_err(|e| e.to_string())?)
        }
        at::GRAPH | at::GRAPHS => return Err("graph attributes (control flow) are not supported".into()),
        at::SPARSE_TENSOR | at::SPARSE_TENSORS => return Err("sparse tensors are not supported".into()),
        at::TYPE_PROTO | at::TYPE_PROTOS => return Err("type attributes are not supported".into()),
        at::TENSORS => return Err("tensor-list attributes are not supported".into()),
        k => return Err(format!("unknown attribute type {k}")),
    })
}

/// The value of a `Constant` node from whichever attribute holds it.
fn constant_value(mut a: Attrs) -> std::result::Result<Tensor, OpError> {
    let t = if let Some(t) = a.opt_tensor("value")? {
        t
    } else if let Some(v) = a.opt_float("value_float")? {
        Tensor::scalar(v)
    } else if let Some(v) = a.opt_floats("value_floats")? {
        Tensor::from_vec(vec![v.len()], v)
    } else if let Some(v) = a.opt_int("value_int")? {
        Tensor::scalar(v)
    } else if let Some(v) = a.opt_ints("value_ints")? {
        Tensor::from_vec(vec![v.len()], v)
    } else if a.contains("value_string") || a.contains("value_strings") {
        return Err(OpError::Unsupported("string constants".into()));
    } else if a.contains("sparse_value") {
        return Err(OpError::Unsupported("sparse constants".into()));
    } else {
        return Err(OpError::Invalid("Constant without a value attribute".into()));
    };
    a.finish()?;
    Ok(t)
}

/// Checks a graph output against its declared type (catches inference disagreeing with the exporter).
fn check_declared(g: &Graph, v: ValueId, vi: &ValueInfoProto) -> Result<()> {
    let Some(TypeValue::TensorType(tt)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else { return Ok(()) };
    let got = g.ty(v);
    let mismatch = |what: &str| {
        Error::Model(format!(
            "graph output '{}': the model declares {what}, but shape inference gives {}",
            vi.name,
            format_type(got)
        ))
    };
    if let Some(d) = DType::from_onnx(tt.elem_type)
        && d != got.dtype
    {
        return Err(mismatch(&format!("type {d}")));
    }
    if let Some(shape) = &tt.shape {
        use crate::onnx::proto::DimensionValue as DV;
        if !shape.dim.is_empty() || got.rank() == 0 {
            if shape.dim.len() != got.rank() {
                return Err(mismatch(&format!("rank {}", shape.dim.len())));
            }
            for (d, gd) in shape.dim.iter().zip(&got.shape) {
                if let (Some(DV::DimValue(want)), Dim::Known(have)) = (&d.value, gd)
                    && *want >= 0
                    && *want as usize != *have
                {
                    let dims: Vec<String> = shape
                        .dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(DV::DimValue(v)) => v.to_string(),
                            Some(DV::DimParam(p)) => p.clone(),
                            None => "?".into(),
                        })
                        .collect();
                    return Err(mismatch(&format!("shape [{}]", dims.join(","))));
                }
            }
        }
    }
    Ok(())
}
