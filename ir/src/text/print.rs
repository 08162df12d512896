//! Printing graphs in the IR text form.

use std::fmt::Write;

use crate::attrs::{fmt_f32, fmt_f64, quote};
use crate::dtype::DType;
use crate::graph::{Graph, NodeId, ValueId};
use crate::ops::{Op, Step};
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;

/// Constants with at most this many elements print their values inline.
pub const INLINE_LIMIT: usize = 8;

/// True for names that print without quotes.
pub fn is_plain(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
}

fn name(s: &str) -> String {
    if is_plain(s) { s.to_string() } else { quote(s) }
}

/// `%name` for a value.
pub fn value_ref(g: &Graph, v: ValueId) -> String {
    format!("%{}", name(&g.value(v).name))
}

/// A type as `f32[N,3,224,224]`.
pub fn format_type(t: &TensorType) -> String {
    let dims: Vec<String> = t
        .shape
        .iter()
        .map(|d| match d {
            Dim::Known(n) => n.to_string(),
            Dim::Sym(s) => name(s),
        })
        .collect();
    format!("{}[{}]", t.dtype, dims.join(","))
}

/// The 32-bit content hash constants print.
pub fn short_hash(t: &Tensor) -> String {
    format!("{:08x}", t.content_hash() as u32)
}

/// Element values of a tensor as text (f16 as raw bits).
fn format_values(t: &Tensor) -> Vec<String> {
    fn ints<T: crate::tensor::Element + ToString>(t: &Tensor) -> Vec<String> {
        t.view::<T>().map(|v| v.iter().map(|x| x.to_string()).collect()).unwrap_or_default()
    }
    match t.dtype() {
        DType::F32 => t.view::<f32>().map(|v| v.iter().map(|&x| fmt_f32(x)).collect()).unwrap_or_default(),
        DType::F64 => t.view::<f64>().map(|v| v.iter().map(|&x| fmt_f64(x)).collect()).unwrap_or_default(),
        DType::Bool => t
            .view_bool()
            .map(|v| v.iter().map(|&b| if b != 0 { "true" } else { "false" }.to_string()).collect())
            .unwrap_or_default(),
        DType::I8 => ints::<i8>(t),
        DType::U8 => ints::<u8>(t),
        DType::I16 => ints::<i16>(t),
        DType::U16 => ints::<u16>(t),
        DType::F16 => {
            crate::ops::raw_view::<u16>(t).map(|v| v.iter().map(|x| x.to_string()).collect()).unwrap_or_default()
        }
        DType::I32 => ints::<i32>(t),
        DType::U32 => ints::<u32>(t),
        DType::I64 => ints::<i64>(t),
        DType::U64 => ints::<u64>(t),
    }
}

/// A constant as `const f32[2] [1.0, 2.0]`, or `const f32[64,3,7,7] #1a2b3c4d` when it has more
/// than `inline_limit` elements.
pub fn format_const(t: &Tensor, inline_limit: usize) -> String {
    let ty = format_type(&TensorType::known(t.dtype(), t.shape()));
    if t.numel() > inline_limit {
        return format!("const {ty} #{}", short_hash(t));
    }
    let vals = format_values(t);
    if t.rank() == 0 {
        format!("const {ty} {}", vals.first().map_or("", |s| s.as_str()))
    } else {
        format!("const {ty} [{}]", vals.join(", "))
    }
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
