//! Inlining of model-local functions (`ModelProto.functions`): each call becomes the function's
//! body with inputs, outputs and attribute references substituted.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::onnx::proto::{AttributeProto, FunctionProto, ModelProto, NodeProto};

/// A node to import, with the ai.onnx opset that applies to it (a function's own opset imports
/// apply inside its body).
#[derive(Clone, Debug)]
pub struct FlatNode {
    pub proto: NodeProto,
    pub opset: Option<i64>,
    pub domain_opset: Option<i64>,
}

const MAX_DEPTH: usize = 16;

fn opset_of(imports: &[crate::onnx::proto::OperatorSetIdProto], domain: &str) -> Option<i64> {
    let norm = |d: &str| if d == "ai.onnx" { String::new() } else { d.to_string() };
    imports.iter().find(|o| norm(&o.domain) == norm(domain)).map(|o| o.version)
}

/// The graph's nodes with every call of a model-local function expanded.
pub fn flatten(model: &ModelProto, nodes: &[NodeProto]) -> Result<Vec<FlatNode>> {
    let funcs: HashMap<(String, String), &FunctionProto> =
        model.functions.iter().map(|f| ((f.domain.clone(), f.name.clone()), f)).collect();
    let mut out = Vec::with_capacity(nodes.len());
    let mut counter = 0usize;
    for n in nodes {
        expand(n, &model.opset_import, &funcs, &mut out, 0, &mut counter)?;
    }
    Ok(out)
}

fn expand(
    n: &NodeProto,
    imports: &[crate::onnx::proto::OperatorSetIdProto],
    funcs: &HashMap<(String, String), &FunctionProto>,
    out: &mut Vec<FlatNode>,
    depth: usize,
    counter: &mut usize,
) -> Result<()> {
    let Some(f) = funcs.get(&(n.domain.clone(), n.op_type.clone())) else {
        out.push(FlatNode {
            proto: n.clone(),
            opset: opset_of(imports, ""),
            domain_opset: opset_of(imports, &n.domain),
        });
        return Ok(());
    };
    if depth >= MAX_DEPTH {
        return Err(Error::Model(format!("function '{}' nests deeper than {MAX_DEPTH} calls (recursive?)", f.name)));
    }
    *counter += 1;
    let prefix = format!("{}#{}", if n.name.is_empty() { &f.name } else { &n.name }, counter);
    // Formal names -> actual names; everything else gets the call's prefix.
    let mut rename: HashMap<&str, String> = HashMap::new();
    for (i, formal) in f.input.iter().enumerate() {
        rename.insert(formal, n.input.get(i).cloned().unwrap_or_default());
    }
    for (i, formal) in f.output.iter().enumerate() {
        rename.insert(formal, n.output.get(i).cloned().unwrap_or_default());
    }
    let map = |name: &str| -> String {
        if name.is_empty() {
            return String::new();
        }
        rename.get(name).cloned().unwrap_or_else(|| format!("{prefix}/{name}"))
    };
    // Attribute values of the call, with the function's defaults behind them.
    let mut attrs: HashMap<&str, &AttributeProto> = f.attribute_proto.iter().map(|a| (a.name.as_str(), a)).collect();
    for a in &n.attribute {
        attrs.insert(a.name.as_str(), a);
    }
    let body_imports = if f.opset_import.is_empty() { imports.to_vec() } else { f.opset_import.clone() };
    for inner in &f.node {
        let mut node = inner.clone();
        node.input = inner.input.iter().map(|s| map(s)).collect();
        node.output = inner.output.iter().map(|s| map(s)).collect();
        node.name = format!("{prefix}/{}", if inner.name.is_empty() { &inner.op_type } else { &inner.name });
        let mut resolved = Vec::with_capacity(inner.attribute.len());
        for a in &inner.attribute {
            if a.ref_attr_name.is_empty() {
                resolved.push(a.clone());
            } else if let Some(v) = attrs.get(a.ref_attr_name.as_str()) {
                let mut v = (*v).clone();
                v.name = a.name.clone();
                resolved.push(v);
            }
            // An unset reference leaves the attribute absent (its default applies).
        }
        node.attribute = resolved;
        expand(&node, &body_imports, funcs, out, depth + 1, counter)?;
    }
    Ok(())
}
