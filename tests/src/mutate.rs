//! Structure-aware mutations of ONNX models, for fuzzing. Flipping bytes of a model mostly breaks
//! its protobuf; these change what import and shape inference read instead: attribute values,
//! initializer dims and values, input shapes, node inputs, op types and opsets, and whole new
//! nodes. The same mutations serve the deterministic smoke test (choices from a seeded
//! generator) and the libFuzzer target (choices read from the fuzzer's bytes).

use std::path::Path;

use incept_ir::DType;
use incept_ir::onnx::proto::{
    AttributeProto, Dimension, DimensionValue, ModelProto, TensorProto, TypeValue, ValueInfoProto, attribute_type,
};
use incept_ir::onnx::{self, ExternalData};
use incept_ir::text::parse::SplitMix;

/// Where mutations take their decisions from.
pub trait Choices {
    fn next_u64(&mut self) -> u64;

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }

    /// One element of a non-empty slice.
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

impl Choices for SplitMix {
    fn next_u64(&mut self) -> u64 {
        SplitMix::next_u64(self)
    }
}

/// Choices read from a fuzzer's input, so that mutating the input mutates the decisions. Once the
/// bytes run out every decision is 0.
pub struct FuzzBytes<'a> {
    data: &'a [u8],
}

impl<'a> FuzzBytes<'a> {
    pub fn new(data: &'a [u8]) -> FuzzBytes<'a> {
        FuzzBytes { data }
    }
}

impl Choices for FuzzBytes<'_> {
    fn next_u64(&mut self) -> u64 {
        // Two bytes per decision: enough for every range used here, and short inputs go far.
        let n = self.data.len().min(2);
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head.iter().fold(0u64, |acc, &b| acc << 8 | b as u64)
    }
}

/// A model to start mutating from.
#[derive(Clone)]
pub struct Seed {
    pub name: String,
    pub model: ModelProto,
}

/// Integers that sit on the edges of shape arithmetic.
const EDGE_INTS: [i64; 20] = [
    i64::MIN,
    -(1 << 40),
    -(1 << 31),
    -1000,
    -3,
    -2,
    -1,
    0,
    1,
    2,
    3,
    4,
    7,
    64,
    1000,
    (1 << 31) - 1,
    1 << 31,
    1 << 40,
    1 << 62,
    i64::MAX,
];

const EDGE_FLOATS: [f32; 12] =
    [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 1e-30, 1e30, -1e30, f32::NAN, f32::INFINITY, f32::NEG_INFINITY];

/// Attribute names the supported ops and the importer's legacy forms read.
pub const ATTR_NAMES: [&str; 52] = [
    "allowzero",
    "alpha",
    "antialias",
    "auto_pad",
    "axes",
    "axis",
    "beta",
    "bias",
    "blocksize",
    "broadcast",
    "ceil_mode",
    "coordinate_transformation_mode",
    "count_include_pad",
    "cubic_coeff_a",
    "dilations",
    "end",
    "ends",
    "epsilon",
    "exclude_outside",
    "extrapolation_value",
    "group",
    "is_test",
    "keep_aspect_ratio_policy",
    "keepdims",
    "kernel_shape",
    "max",
    "min",
    "mode",
    "momentum",
    "nearest_mode",
    "noop_with_empty_axes",
    "num_outputs",
    "output_padding",
    "output_shape",
    "pads",
    "perm",
    "ratio",
    "scales",
    "shape",
    "size",
    "spatial",
    "split",
    "start",
    "starts",
    "storage_order",
    "strides",
    "to",
    "training_mode",
    "transA",
    "transB",
    "value",
    "value_ints",
];

/// String attribute values the ops recognise.
pub const ATTR_STRINGS: [&str; 28] = [
    "NOTSET",
    "SAME_UPPER",
    "SAME_LOWER",
    "VALID",
    "DCR",
    "CRD",
    "constant",
    "reflect",
    "edge",
    "wrap",
    "nearest",
    "linear",
    "cubic",
    "bilinear",
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nn",
    "tf_crop_and_resize",
    "round_prefer_floor",
    "round_prefer_ceil",
    "floor",
    "ceil",
    "stretch",
    "not_larger",
    "not_smaller",
];

/// Largest tensor a mutation fills with data (larger dims are still tried, with no data).
const MAX_FILLED: usize = 1 << 16;

/// Applies `n` random mutations to a model. Most runs also forget the declared output shapes,
/// which the importer checks against inference, so that changed dims reach the later stages.
pub fn mutate(m: &mut ModelProto, c: &mut impl Choices, n: usize) {
    if c.below(4) != 0
        && let Some(g) = m.graph.as_mut()
    {
        for o in &mut g.output {
            if let Some(TypeValue::TensorType(tt)) = o.r#type.as_mut().and_then(|t| t.value.as_mut()) {
                tt.shape = None;
            }
        }
    }
    for _ in 0..n {
        mutate_once(m, c);
    }
}

fn mutate_once(m: &mut ModelProto, c: &mut impl Choices) {
    let Some(g) = m.graph.as_mut() else { return };
    match c.below(100) {
        0..=1 => {
            if let Some(o) = m.opset_import.iter_mut().find(|o| o.domain.is_empty() || o.domain == "ai.onnx") {
                o.version = *c.pick(&[1, 6, 7, 9, 10, 11, 12, 13, 17, 18, 19, 28, 29]);
            }
        }
        2..=36 => {
            if g.node.is_empty() {
                return;
            }
            let i = c.below(g.node.len());
            let node = &mut g.node[i];
            if node.attribute.is_empty() || c.below(8) == 0 {
                add_attribute(&mut node.attribute, c);
            } else {
                let k = c.below(node.attribute.len());
                if c.below(10) == 0 {
                    node.attribute.remove(k);
                } else {
                    mutate_attribute(&mut node.attribute[k], c);
                }
            }
        }
        37..=51 => {
            if g.initializer.is_empty() {
                return;
            }
            let i = c.below(g.initializer.len());
            if c.below(6) == 0 {
                initializer_to_input(g, i, c);
            } else {
                mutate_initializer(&mut g.initializer[i], c);
            }
        }
        52..=63 => {
            if g.input.is_empty() {
                return;
            }
            let i = c.below(g.input.len());
            mutate_value_info(&mut g.input[i], c);
        }
        64..=69 => shrink_inputs(g, c),
        70..=77 => {
            if g.node.is_empty() {
                return;
            }
            let names = value_names(g);
            let i = c.below(g.node.len());
            mutate_node_inputs(&mut g.node[i].input, &names, c);
        }
        78..=82 => {
            if g.node.is_empty() {
                return;
            }
            let i = c.below(g.node.len());
            let node = &mut g.node[i];
            match c.below(3) {
                0 => node.op_type = random_op(c),
                1 => node.output.push(format!("extra_out_{}", c.below(1000))),
                _ => {
                    if node.output.len() > 1 {
                        node.output.pop();
                    }
                }
            }
        }
        _ => insert_node(m, c),
    }
}

/// Turns an initializer into a graph input of the same element type, its dims kept or one of them
/// made large: weights and shapes the model no longer holds, which only their dims bound.
fn initializer_to_input(g: &mut incept_ir::onnx::proto::GraphProto, i: usize, c: &mut impl Choices) {
    let t = g.initializer.remove(i);
    let mut dims = t.dims.clone();
    if !dims.is_empty() && c.below(2) == 0 {
        let k = c.below(dims.len());
        dims[k] = *c.pick(&[1 << 16, 1 << 20, 1 << 31]);
    }
    let dim = |d: i64| Dimension { value: Some(DimensionValue::DimValue(d)), denotation: String::new() };
    let ty = incept_ir::onnx::proto::TypeProto {
        value: Some(TypeValue::TensorType(incept_ir::onnx::proto::TypeTensor {
            elem_type: t.data_type,
            shape: Some(incept_ir::onnx::proto::TensorShapeProto { dim: dims.into_iter().map(dim).collect() }),
        })),
        denotation: String::new(),
    };
    g.input.retain(|v| v.name != t.name);
    g.input.push(ValueInfoProto { name: t.name, r#type: Some(ty), doc_string: String::new() });
}

/// Makes every large dim of every graph input small, so that the CNN fixtures become cheap enough
/// to interpret, compile and run.
fn shrink_inputs(g: &mut incept_ir::onnx::proto::GraphProto, c: &mut impl Choices) {
    let size = 1 + c.below(8) as i64;
    for v in &mut g.input {
        let Some(TypeValue::TensorType(tt)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) else { continue };
        for d in tt.shape.iter_mut().flat_map(|s| s.dim.iter_mut()) {
            if let Some(DimensionValue::DimValue(n)) = &mut d.value
                && *n > 8
            {
                *n = size;
            }
        }
    }
}

/// Names every node may read: graph inputs, initializers and node outputs.
fn value_names(g: &incept_ir::onnx::proto::GraphProto) -> Vec<String> {
    let mut names: Vec<String> = g.input.iter().map(|v| v.name.clone()).collect();
    names.extend(g.initializer.iter().map(|t| t.name.clone()));
    names.extend(g.node.iter().flat_map(|n| n.output.iter().cloned()));
    names.retain(|n| !n.is_empty());
    names
}

fn random_op(c: &mut impl Choices) -> String {
    let ops = incept_ir::ops::OPS;
    ops[c.below(ops.len())].name.to_string()
}

fn edge_int(c: &mut impl Choices, around: i64) -> i64 {
    match c.below(3) {
        0 => *c.pick(&EDGE_INTS),
        1 => around.wrapping_add(c.below(5) as i64 - 2),
        _ => c.below(9) as i64 - 2,
    }
}

fn edge_float(c: &mut impl Choices, around: f32) -> f32 {
    match c.below(3) {
        0 => *c.pick(&EDGE_FLOATS),
        1 => around * (c.below(5) as f32 - 1.0),
        _ => c.below(9) as f32 * 0.25,
    }
}

fn mutate_ints(v: &mut Vec<i64>, c: &mut impl Choices) {
    match c.below(6) {
        0 => v.push(edge_int(c, 1)),
        1 => {
            v.pop();
        }
        2 => v.clear(),
        3 if !v.is_empty() => {
            let i = c.below(v.len());
            v.insert(i, v[i]);
        }
        _ => {
            if v.is_empty() {
                v.push(edge_int(c, 1));
            } else {
                let i = c.below(v.len());
                v[i] = edge_int(c, v[i]);
            }
        }
    }
}

fn mutate_attribute(a: &mut AttributeProto, c: &mut impl Choices) {
    if c.below(10) == 0 {
        a.name = c.pick(&ATTR_NAMES).to_string();
        return;
    }
    match a.r#type {
        attribute_type::INT => a.i = edge_int(c, a.i),
        attribute_type::INTS => mutate_ints(&mut a.ints, c),
        attribute_type::FLOAT => a.f = edge_float(c, a.f),
        attribute_type::FLOATS => {
            if a.floats.is_empty() || c.below(4) == 0 {
                a.floats.push(edge_float(c, 1.0));
            } else {
                let i = c.below(a.floats.len());
                a.floats[i] = edge_float(c, a.floats[i]);
            }
        }
        attribute_type::STRING => a.s = bytes::Bytes::from(c.pick(&ATTR_STRINGS).as_bytes().to_vec()),
        attribute_type::TENSOR => {
            if let Some(t) = a.t.as_mut() {
                mutate_initializer(t, c);
            }
        }
        _ => a.r#type = attribute_type::INT,
    }
}

fn add_attribute(attrs: &mut Vec<AttributeProto>, c: &mut impl Choices) {
    let name = c.pick(&ATTR_NAMES).to_string();
    let mut a = AttributeProto { name, ..Default::default() };
    match c.below(5) {
        0 => {
            a.r#type = attribute_type::INT;
            a.i = edge_int(c, 1);
        }
        1 => {
            a.r#type = attribute_type::INTS;
            a.ints = (0..c.below(7)).map(|_| edge_int(c, 1)).collect();
        }
        2 => {
            a.r#type = attribute_type::FLOAT;
            a.f = edge_float(c, 1.0);
        }
        3 => {
            a.r#type = attribute_type::FLOATS;
            a.floats = (0..c.below(5)).map(|_| edge_float(c, 1.0)).collect();
        }
        _ => {
            a.r#type = attribute_type::STRING;
            a.s = bytes::Bytes::from(c.pick(&ATTR_STRINGS).as_bytes().to_vec());
        }
    }
    attrs.push(a);
}

/// A copy of a tensor's elements as raw bytes, or `None` when the proto does not decode.
fn raw_elements(t: &TensorProto) -> Option<(DType, Vec<u8>)> {
    let v = onnx::tensor_from_proto(t, &ExternalData::new(None)).ok()?;
    Some((v.dtype(), v.bytes().to_vec()))
}

/// Sets `dims`, refilling the data to match (cycling the old elements) when asked and the result
/// is small.
fn reshape_initializer(t: &mut TensorProto, dims: Vec<i64>, refill: bool) {
    let numel = dims.iter().try_fold(1i64, |a, &d| if d < 0 { None } else { a.checked_mul(d) });
    match (numel, raw_elements(t)) {
        (Some(n), Some((dtype, old))) if refill && (n as usize) <= MAX_FILLED => {
            let size = dtype.size();
            let count = old.len() / size;
            let mut raw = Vec::with_capacity(n as usize * size);
            for i in 0..n as usize {
                match count {
                    0 => raw.extend(std::iter::repeat_n(0u8, size)),
                    _ => raw.extend_from_slice(&old[(i % count) * size..][..size]),
                }
            }
            set_raw(t, dtype, raw);
        }
        _ => {}
    }
    t.dims = dims;
}

fn set_raw(t: &mut TensorProto, dtype: DType, raw: Vec<u8>) {
    t.data_type = dtype as i32;
    t.float_data.clear();
    t.int32_data.clear();
    t.int64_data.clear();
    t.double_data.clear();
    t.uint64_data.clear();
    t.raw_data = bytes::Bytes::from(raw);
}

fn mutate_initializer(t: &mut TensorProto, c: &mut impl Choices) {
    match c.below(5) {
        0 | 1 => {
            let mut dims = t.dims.clone();
            if dims.is_empty() || c.below(4) == 0 {
                dims.insert(c.below(dims.len() + 1), *c.pick(&[0, 1, 2, 3]));
            } else {
                let i = c.below(dims.len());
                match c.below(4) {
                    0 => {
                        dims.remove(i);
                    }
                    1 => dims[i] = *c.pick(&[0, 1, 2]),
                    _ => dims[i] = edge_int(c, dims[i]),
                }
            }
            let refill = c.below(4) != 0;
            reshape_initializer(t, dims, refill);
        }
        2 | 3 => {
            // One element to an edge value, keeping the dtype.
            let Some((dtype, mut raw)) = raw_elements(t) else { return };
            let size = dtype.size();
            if raw.is_empty() {
                return;
            }
            let i = c.below(raw.len() / size);
            let slot = &mut raw[i * size..][..size];
            match dtype {
                DType::F32 => slot.copy_from_slice(&edge_float(c, 1.0).to_le_bytes()),
                DType::F64 => slot.copy_from_slice(&(edge_float(c, 1.0) as f64).to_le_bytes()),
                DType::I64 => slot.copy_from_slice(&edge_int(c, i64::from_le_bytes(slot_array(slot))).to_le_bytes()),
                DType::I32 => slot.copy_from_slice(&(edge_int(c, 0) as i32).to_le_bytes()),
                _ => slot.iter_mut().for_each(|b| *b = c.below(256) as u8),
            }
            set_raw(t, dtype, raw);
        }
        _ => {
            // Another element type, same bytes: mostly a length error, sometimes a new meaning.
            let codes = [1, 2, 3, 5, 6, 7, 9, 10, 11, 8, 16];
            t.data_type = *c.pick(&codes);
        }
    }
}

fn slot_array(s: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&s[..8]);
    a
}

fn mutate_value_info(v: &mut ValueInfoProto, c: &mut impl Choices) {
    let Some(TypeValue::TensorType(tt)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) else { return };
    if c.below(8) == 0 {
        tt.elem_type = *c.pick(&[1, 6, 7, 9, 10, 11, 0, 8]);
        return;
    }
    let Some(shape) = tt.shape.as_mut() else { return };
    let dims = &mut shape.dim;
    let dim = |value: DimensionValue| Dimension { value: Some(value), denotation: String::new() };
    match c.below(6) {
        0 => dims.push(dim(DimensionValue::DimValue(*c.pick(&[0, 1, 2, 3])))),
        1 => {
            dims.pop();
        }
        2 if !dims.is_empty() => {
            let i = c.below(dims.len());
            dims[i] = dim(DimensionValue::DimParam(c.pick(&["N", "M", ""]).to_string()));
        }
        _ if !dims.is_empty() => {
            let i = c.below(dims.len());
            let old = match dims[i].value {
                Some(DimensionValue::DimValue(d)) => d,
                _ => 1,
            };
            // Mostly shrink: small models are what the later stages can afford to run.
            let d = match c.below(3) {
                0 => edge_int(c, old),
                _ => *c.pick(&[0, 1, 1, 2, 3, 4, 5, 8]),
            };
            dims[i] = dim(DimensionValue::DimValue(d));
        }
        _ => {}
    }
}

fn mutate_node_inputs(inputs: &mut Vec<String>, names: &[String], c: &mut impl Choices) {
    match c.below(5) {
        0 if !inputs.is_empty() => {
            inputs.remove(c.below(inputs.len()));
        }
        1 if !inputs.is_empty() => {
            let i = c.below(inputs.len());
            inputs.insert(i, inputs[i].clone());
        }
        2 if !inputs.is_empty() => {
            let i = c.below(inputs.len());
            inputs[i] = String::new();
        }
        3 if inputs.len() >= 2 => {
            let (i, j) = (c.below(inputs.len()), c.below(inputs.len()));
            inputs.swap(i, j);
        }
        _ if !names.is_empty() => {
            let name = c.pick(names).clone();
            if inputs.is_empty() || c.below(3) == 0 {
                inputs.push(name);
            } else {
                let i = c.below(inputs.len());
                inputs[i] = name;
            }
        }
        _ => {}
    }
}

/// Appends a node of a random op reading existing values and small new integer constants (the
/// shapes, axes and pads many ops take as inputs), and makes its first output a graph output.
fn insert_node(m: &mut ModelProto, c: &mut impl Choices) {
    let Some(g) = m.graph.as_mut() else { return };
    let names = value_names(g);
    let id = g.node.len() + g.initializer.len();
    let mut inputs = vec![];
    for k in 0..1 + c.below(4) {
        if names.is_empty() || (k > 0 && c.below(3) == 0) {
            let name = format!("fuzz_const_{id}_{k}");
            let len = c.below(5);
            let vals: Vec<i64> = (0..len).map(|_| edge_int(c, 1)).collect();
            let t = TensorProto {
                name: name.clone(),
                dims: if len == 1 && c.below(2) == 0 { vec![] } else { vec![len as i64] },
                data_type: DType::I64 as i32,
                int64_data: vals,
                ..Default::default()
            };
            g.initializer.push(t);
            inputs.push(name);
        } else if c.below(8) == 0 {
            inputs.push(String::new());
        } else {
            inputs.push(c.pick(&names).clone());
        }
    }
    let op_type = random_op(c);
    let mut attribute = vec![];
    for _ in 0..c.below(4) {
        add_attribute(&mut attribute, c);
    }
    let outputs: Vec<String> = (0..1 + c.below(2)).map(|k| format!("fuzz_out_{id}_{k}")).collect();
    g.output.push(ValueInfoProto { name: outputs[0].clone(), ..Default::default() });
    g.node.push(incept_ir::onnx::proto::NodeProto {
        op_type,
        name: format!("fuzz_node_{id}"),
        input: inputs,
        output: outputs,
        attribute,
        ..Default::default()
    });
}

/// The integers a sweep tries in every integer slot.
const SWEEP_INTS: [i64; 9] = [i64::MIN, -(1 << 40), -2, -1, 0, 1, 2, 1 << 31, i64::MAX];

/// Every model that differs from `m` in one place: each graph input dim and each initializer dim
/// set to 0 and to 1, each integer of an initializer or an attribute set to each of
/// [`SWEEP_INTS`], each float attribute to each of the edge floats. Systematic where `mutate` is
/// random: every op of the seeds meets empty dims and extreme attributes.
pub fn sweep(m: &ModelProto) -> Vec<ModelProto> {
    let mut out = vec![];
    let Some(g) = m.graph.as_ref() else { return out };
    let variant = |f: &mut dyn FnMut(&mut incept_ir::onnx::proto::GraphProto)| {
        let mut v = m.clone();
        if let Some(g) = v.graph.as_mut() {
            for o in &mut g.output {
                o.r#type = None;
            }
            f(g);
        }
        v
    };
    for (i, input) in g.input.iter().enumerate() {
        let Some(TypeValue::TensorType(tt)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else { continue };
        let rank = tt.shape.as_ref().map_or(0, |s| s.dim.len());
        for k in 0..rank {
            for d in [0, 1] {
                out.push(variant(&mut |g| {
                    if let Some(TypeValue::TensorType(tt)) = g.input[i].r#type.as_mut().and_then(|t| t.value.as_mut())
                        && let Some(s) = tt.shape.as_mut()
                    {
                        s.dim[k].value = Some(DimensionValue::DimValue(d));
                    }
                }));
            }
        }
    }
    for (i, t) in g.initializer.iter().enumerate() {
        for k in 0..t.dims.len() {
            for d in [0, 1] {
                out.push(variant(&mut |g| {
                    let t = &mut g.initializer[i];
                    let mut dims = t.dims.clone();
                    dims[k] = d;
                    reshape_initializer(t, dims, true);
                }));
            }
        }
        let Some((dtype, raw)) = raw_elements(t) else { continue };
        if dtype != DType::I64 || raw.len() > 8 * 16 {
            continue;
        }
        for e in 0..raw.len() / 8 {
            for &v in &SWEEP_INTS {
                out.push(variant(&mut |g| {
                    let mut raw = raw.clone();
                    raw[e * 8..][..8].copy_from_slice(&v.to_le_bytes());
                    set_raw(&mut g.initializer[i], DType::I64, raw);
                }));
            }
        }
    }
    for (n, node) in g.node.iter().enumerate() {
        for (a, attr) in node.attribute.iter().enumerate() {
            let slots = match attr.r#type {
                attribute_type::INT => 1,
                attribute_type::INTS => attr.ints.len(),
                attribute_type::FLOAT => 1,
                _ => 0,
            };
            for e in 0..slots {
                if attr.r#type == attribute_type::FLOAT {
                    for &f in &EDGE_FLOATS {
                        out.push(variant(&mut |g| g.node[n].attribute[a].f = f));
                    }
                    continue;
                }
                for &v in &SWEEP_INTS {
                    out.push(variant(&mut |g| {
                        let attr = &mut g.node[n].attribute[a];
                        if attr.r#type == attribute_type::INT { attr.i = v } else { attr.ints[e] = v }
                    }));
                }
            }
        }
    }
    out
}

/// Every seed that imports as it is: mutations of a model import already refuses (an element
/// type incept does not hold, say) would only ever test that refusal.
pub fn importable_seeds() -> Vec<Seed> {
    use prost::Message;
    let mut seeds = fixture_seeds();
    seeds.extend(conformance_seeds());
    let opts = onnx::ImportOptions::default();
    seeds.retain(|s| onnx::load_bytes(bytes::Bytes::from(s.model.encode_to_vec()), &opts).is_ok());
    seeds
}

/// The fixture models: the exporters' mini CNNs and the epilogue repros.
pub fn fixture_seeds() -> Vec<Seed> {
    let dir = crate::fixtures_dir();
    let mut paths: Vec<std::path::PathBuf> = crate::FIXTURES.iter().map(|n| dir.join(format!("{n}.onnx"))).collect();
    if let Ok(entries) = std::fs::read_dir(dir.join("epilogue")) {
        let mut more: Vec<_> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
            .collect();
        more.sort();
        paths.extend(more);
    }
    paths.iter().filter_map(|p| seed_from(p, None)).collect()
}

/// The vendored ONNX backend node tests, with their integer inputs (shapes, axes, pads, indices)
/// turned into initializers holding the test values, as a deployment would fix them: these
/// single-op models reach the ops the CNN fixtures never use.
pub fn conformance_seeds() -> Vec<Seed> {
    crate::conformance::cases()
        .iter()
        .filter(|c| c.starts_with("node/"))
        .filter_map(|case| seed_from(&crate::conformance::case_dir(case).join("model.onnx"), Some(case)))
        .collect()
}

fn seed_from(path: &Path, case: Option<&str>) -> Option<Seed> {
    let bytes = std::fs::read(path).ok()?;
    let mut model = onnx::decode(bytes::Bytes::from(bytes)).ok()?;
    let name = case.map_or_else(|| path.file_stem().unwrap_or_default().to_string_lossy().to_string(), str::to_string);
    if let Some(case) = case {
        freeze_int_inputs(&mut model, case);
    }
    Some(Seed { name, model })
}

fn freeze_int_inputs(model: &mut ModelProto, case: &str) {
    let Ok(sets) = crate::conformance::test_sets(&crate::conformance::case_dir(case)) else { return };
    let Some(set) = sets.first() else { return };
    let Ok(values) = crate::conformance::read_set(set, "input") else { return };
    let names = onnx::graph_input_names(model);
    let Some(g) = model.graph.as_mut() else { return };
    for (name, t) in names.iter().zip(values) {
        if !t.dtype().is_int() || t.numel() > MAX_FILLED {
            continue;
        }
        g.input.retain(|v| &v.name != name);
        g.initializer.push(TensorProto {
            name: name.clone(),
            dims: t.shape().iter().map(|&d| d as i64).collect(),
            data_type: t.dtype() as i32,
            raw_data: t.bytes().clone(),
            ..Default::default()
        });
    }
}
