//! Graphviz rendering of a graph (`incept inspect --format dot`).

use std::fmt::Write;

use crate::format::format_type;
use crate::graph::Graph;
use crate::ops::Op;

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The graph as a DOT digraph: one box per op, ellipses for inputs and outputs; constants are
/// folded into their consumer's label to keep the picture readable.
pub fn to_dot(g: &Graph) -> Result<String, crate::error::Error> {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&g.name));
    let _ = writeln!(out, "  rankdir=TB;\n  node [fontname=\"Helvetica\", fontsize=10];");
    for id in g.topo_order()? {
        let node = g.node(id);
        let key = id.index();
        match &node.op {
            Op::Const(_) => continue,
            Op::Input(_) => {
                let v = &node.outputs[0];
                let _ =
                    writeln!(out, "  n{key} [shape=ellipse, label=\"{}\\n{}\"];", escape(&v.name), format_type(&v.ty));
            }
            op => {
                let consts: Vec<String> = node
                    .input_values()
                    .filter_map(|v| {
                        g.const_value(v).map(|t| format_type(&crate::shape::TensorType::known(t.dtype(), t.shape())))
                    })
                    .collect();
                let mut label = format!("{}\\n{}", op.name(), escape(&node.name));
                for c in consts {
                    let _ = write!(label, "\\n{c}");
                }
                let types: Vec<String> = node.outputs.iter().map(|v| format_type(&v.ty)).collect();
                let _ = write!(label, "\\n-> {}", types.join(", "));
                let _ = writeln!(out, "  n{key} [shape=box, style=rounded, label=\"{label}\"];");
            }
        }
        for v in node.input_values() {
            if g.const_value(v).is_none() {
                let _ = writeln!(out, "  n{} -> n{key};", v.node.index());
            }
        }
    }
    for (i, &v) in g.outputs().iter().enumerate() {
        let _ = writeln!(
            out,
            "  out{i} [shape=ellipse, label=\"{}\"];\n  n{} -> out{i};",
            escape(&g.value(v).name),
            v.node.index()
        );
    }
    out.push_str("}\n");
    Ok(out)
}
