//! ONNX import: protobuf messages, model loading (memory-mapped, zero-copy weights), external
//! data, model-local function inlining, opset normalisation and graph construction.

pub mod functions;
pub mod import;
pub mod legacy;
pub mod proto;
pub mod tensor;

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use prost::Message;

use crate::error::{Error, Result};
use crate::graph::Graph;

pub use import::import_model;
pub use tensor::{ExternalData, map_file, tensor_from_proto};

/// Lowest and highest ONNX IR versions accepted.
pub const MIN_IR_VERSION: i64 = 3;
pub const MAX_IR_VERSION: i64 = 14;

/// Shapes the user fixes at import: whole input shapes by input name, and symbolic dims by symbol.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    pub input_shapes: HashMap<String, Vec<usize>>,
    pub dims: HashMap<String, usize>,
    /// Graph inputs replaced by constants (e.g. a shape or scales input that is fixed for a
    /// deployment): they stop being inputs, and shape inference sees their values.
    pub frozen_inputs: HashMap<String, crate::tensor::Tensor>,
}

/// Decodes a model without copying its weights (they stay slices of `bytes`).
pub fn decode(bytes: Bytes) -> Result<proto::ModelProto> {
    Ok(proto::ModelProto::decode(bytes)?)
}

/// Decodes a model file (memory-mapped) and prepares external data resolution next to it.
pub fn open(path: &Path) -> Result<(proto::ModelProto, ExternalData)> {
    if path.is_dir() {
        // Mapping a directory fails with "No such device", which says nothing useful.
        return Err(Error::Io { path: path.to_path_buf(), error: directory_error(path) });
    }
    let bytes = map_file(path)?;
    if bytes.is_empty() {
        return Err(Error::Model(format!("'{}' is empty", path.display())));
    }
    let model = decode(bytes)?;
    let dir = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p }).map(Path::to_path_buf);
    Ok((model, ExternalData::new(dir)))
}

/// Says that `dir` is a directory where a model file was expected, and which models it holds.
fn directory_error(dir: &Path) -> std::io::Error {
    let mut models: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".onnx"))
                .collect()
        })
        .unwrap_or_default();
    models.sort();
    const SHOWN: usize = 3;
    let holds = match models.len() {
        0 => String::new(),
        n if n <= SHOWN => format!(" (it holds {})", models.join(", ")),
        n => format!(" (it holds {} and {} more)", models[..SHOWN].join(", "), n - SHOWN),
    };
    std::io::Error::new(std::io::ErrorKind::IsADirectory, format!("it is a directory, not an ONNX model file{holds}"))
}

/// Loads a model file. External data files resolve relative to the file's folder.
pub fn load(path: &Path, opts: &ImportOptions) -> Result<Graph> {
    let (model, ext) = open(path)?;
    import_model(&model, &ext, opts)
}

/// Loads a model file, fixing the shapes of inputs the options leave open to those of the given
/// tensors (matched by name when all are named, else by order), so that symbolic dims bind to the
/// data the model will run on.
pub fn load_for_inputs(
    path: &Path,
    opts: &ImportOptions,
    inputs: &[(Option<String>, crate::tensor::Tensor)],
) -> Result<Graph> {
    let (model, ext) = open(path)?;
    import_model(&model, &ext, &options_for_inputs(&model, opts, inputs))
}

/// What [`load_for_inputs`] imports with: `opts`, plus the shape of each given tensor for the
/// graph input it binds to (by name when all are named, else by order) unless `opts` fixes that
/// input's shape already.
pub fn options_for_inputs(
    model: &proto::ModelProto,
    opts: &ImportOptions,
    inputs: &[(Option<String>, crate::tensor::Tensor)],
) -> ImportOptions {
    let names = graph_input_names(model);
    let all_named = inputs.iter().all(|(n, _)| n.is_some());
    let mut opts = opts.clone();
    for (i, (name, t)) in inputs.iter().enumerate() {
        let name = if all_named { name.clone() } else { names.get(i).cloned() };
        if let Some(name) = name.filter(|n| names.contains(n)) {
            opts.input_shapes.entry(name).or_insert_with(|| t.shape().to_vec());
        }
    }
    opts
}

/// Names of the graph inputs that are not initializers, in order.
pub fn graph_input_names(model: &proto::ModelProto) -> Vec<String> {
    let Some(g) = &model.graph else { return vec![] };
    let inits: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    g.input.iter().filter(|i| !inits.contains(i.name.as_str())).map(|i| i.name.clone()).collect()
}

/// Loads a model from memory. Models with external data must be loaded from their path instead.
pub fn load_bytes(bytes: Bytes, opts: &ImportOptions) -> Result<Graph> {
    if bytes.is_empty() {
        return Err(Error::Model("the model is empty (0 bytes)".into()));
    }
    let model = decode(bytes)?;
    import_model(&model, &ExternalData::new(None), opts)
}

/// Reads one tensor of an ONNX test data set (`input_0.pb`, `output_0.pb`): its name and value.
pub fn read_tensor_file(path: &Path) -> Result<(String, crate::tensor::Tensor)> {
    let bytes = map_file(path)?;
    let t = proto::TensorProto::decode(bytes)?;
    let dir = path.parent().map(Path::to_path_buf);
    let value = tensor_from_proto(&t, &ExternalData::new(dir))?;
    Ok((t.name, value))
}
