//! How the IR text form writes names, numbers, types and constants. The printer, attribute
//! display and error messages share it; it sits above the data types (dtype, shape, tensor) and
//! below everything that holds them (attributes, ops, the graph), so any of those can format
//! without reaching up to the printer.

use crate::dtype::DType;
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;

/// Formats a float so that parsing it back gives the same bits (and always shows it is a float).
pub fn fmt_f32(v: f32) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{v:?}")
    }
}

pub fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{v:?}")
    }
}

/// Writes a string as a double-quoted literal with escapes.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// True for names that print without quotes.
pub fn is_plain(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
}

/// A value or symbol name as the text form writes it: plain, or quoted.
pub fn name(s: &str) -> String {
    if is_plain(s) { s.to_string() } else { quote(s) }
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
        DType::F16 => bytemuck::pod_collect_to_vec::<u8, u16>(t.bytes()).iter().map(|x| x.to_string()).collect(),
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
