//! Printing graphs in the IR text form.

use std::fmt::Write;

use crate::format::{format_const, format_type, name, quote};
use crate::graph::{Graph, NodeId, ValueId};
use crate::ops::{Op, Step};

/// Constants with at most this many elements print their values inline.
pub const INLINE_LIMIT: usize = 8;

/// `%name` for a value.
pub fn value_ref(g: &Graph, v: ValueId) -> String {
    format!("%{}", name(&g.value(v).name))
}

/// Prints the whole graph.
pub fn print(g: &Graph) -> Result<String, crate::error::Error> {
    let mut out = String::new();
    let _ = writeln!(out, "graph {} {{", quote(&g.name));
    for id in g.topo_order()? {
        let _ = writeln!(out, "  {}", node_text(g, id));
    }
    let outs: Vec<String> = g.outputs().iter().map(|&v| value_ref(g, v)).collect();
    let _ = writeln!(out, "  output {}", outs.join(", "));
    out.push_str("}\n");
    Ok(out)
}

/// One node as it prints in the graph (without indentation): `%y = Conv(%x, %w) {...} : f32[..]`.
pub fn node_text(g: &Graph, id: NodeId) -> String {
    let mut out = String::new();
    let node = g.node(id);
    match &node.op {
        Op::Input(_) => {
            let v = &node.outputs[0];
            let _ = write!(out, "input %{} : {}", name(&v.name), format_type(&v.ty));
            return out;
        }
        Op::Const(c) => {
            let _ = write!(out, "%{} = {}", name(&node.outputs[0].name), format_const(&c.value, INLINE_LIMIT));
        }
        op => {
            let outs: Vec<String> = node.outputs.iter().map(|v| format!("%{}", name(&v.name))).collect();
            let ins: Vec<String> =
                node.inputs().iter().map(|i| i.map_or("_".to_string(), |v| value_ref(g, v))).collect();
            // A fused op lists its base op's inputs; the epilogue names its own operands.
            let shown = match op {
                Op::Fused(f) => &ins[..f.base_inputs.min(ins.len())],
                _ => &ins[..],
            };
            let _ = write!(out, "{} = {}({})", outs.join(", "), op.name(), shown.join(", "));
            let attrs = op.attrs();
            if !attrs.is_empty() {
                let a: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = write!(out, " {{{}}}", a.join(", "));
            }
            match op {
                Op::Fused(f) => {
                    let steps: Vec<String> = f
                        .steps
                        .iter()
                        .map(|s| match s {
                            Step::Add { operand } => {
                                format!("add {}", ins.get(*operand).map_or("?", |s| s.as_str()))
                            }
                            Step::Act(a) => a.text(),
                        })
                        .collect();
                    let _ = write!(out, " epilogue({})", steps.join(", "));
                }
                Op::Elementwise(e) => {
                    let _ = write!(out, " expr({})", e.expr.text(&ins));
                }
                _ => {}
            }
            let types: Vec<String> = node.outputs.iter().map(|v| format_type(&v.ty)).collect();
            let _ = write!(out, " : {}", types.join(", "));
        }
    }
    if node.outputs.first().is_none_or(|v| v.name != node.name) {
        let _ = write!(out, " @{}", name(&node.name));
    }
    out
}
