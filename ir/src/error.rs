//! Error types of the IR crate. Messages name the node, the op and what was expected versus found.

use std::fmt;
use std::path::PathBuf;

use crate::tensor::TensorError;

/// What is wrong with one op: its attributes, inputs or shapes. The graph-level [`Error::Node`]
/// adds the node name and op type.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum OpError {
    /// The model is malformed for this op (wrong input count, inconsistent shapes, bad attribute).
    #[error("{0}")]
    Invalid(String),
    /// Valid ONNX that incept does not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A shape that depends on data known only at run time, or on an unbound symbolic dimension.
    #[error("unsupported dynamic shape: {0}")]
    DynamicShape(String),
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// Returns early with `OpError::Invalid(format!(...))`.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => { return Err($crate::error::OpError::Invalid(format!($($arg)*))) };
}

/// One unsupported op type found in a model, with every node that uses it. `reason` is a whole
/// sentence naming the op: whether it is a standard ONNX operator incept lacks or not an ONNX
/// operator at all.
#[derive(Debug, Clone, PartialEq)]
pub struct UnsupportedOp {
    pub op_type: String,
    pub domain: String,
    pub opset: Option<i64>,
    pub nodes: Vec<String>,
    pub reason: String,
}

impl fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The reason names the op, its domain and opset where they matter.
        write!(f, "{}; nodes: ", self.reason)?;
        const SHOWN: usize = 8;
        let names: Vec<String> = self.nodes.iter().take(SHOWN).map(|n| format!("'{n}'")).collect();
        f.write_str(&names.join(", "))?;
        if self.nodes.len() > SHOWN {
            write!(f, " and {} more", self.nodes.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// Errors of import, verification, parsing and interpretation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read '{}': {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    #[error("cannot write '{}': {error}", path.display())]
    Write { path: PathBuf, error: std::io::Error },
    #[error("not a valid ONNX model: protobuf decoding failed: {0}")]
    Decode(prost::DecodeError),
    #[error("{0}")]
    Model(String),
    #[error("node '{node}' ({op}): {error}")]
    Node { node: String, op: String, error: OpError },
    #[error("the model uses operators incept does not support:\n{}", list_unsupported(.0))]
    UnsupportedOps(Vec<UnsupportedOp>),
    #[error("external data of tensor '{tensor}': {msg}")]
    ExternalData { tensor: String, msg: String },
    #[error("verifier: {0}")]
    Verify(String),
    #[error("IR text, line {line}, column {col}: {msg}")]
    Parse { line: usize, col: usize, msg: String },
    #[error("input '{name}': {msg}")]
    Input { name: String, msg: String },
    #[error(transparent)]
    Cut(#[from] CutError),
}

fn list_unsupported(ops: &[UnsupportedOp]) -> String {
    ops.iter().map(|o| format!("  - {o}")).collect::<Vec<_>>().join("\n")
}

// Not `#[from]`: the message already includes the decoder's, and a source would print it twice.
impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Error {
        Error::Decode(e)
    }
}

impl Error {
    pub fn node(node: &str, op: &str, error: OpError) -> Error {
        Error::Node { node: node.to_string(), op: op.to_string(), error }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a graph cannot be cut at the given values.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CutError {
    #[error("no output names given")]
    NoOutputs,
    #[error("the model has no value '{name}'{}", Closest(.closest))]
    UnknownValue {
        name: String,
        /// The most similar value names of the model, most similar first.
        closest: Vec<String>,
    },
    #[error("'{0}' is a graph input, not a value the model computes")]
    GraphInput(String),
    #[error("'{0}' is a constant (an initializer) of the model, not a value it computes")]
    Constant(String),
    #[error("'{0}' is named twice among the outputs")]
    Duplicate(String),
}

/// The "; closest: ..." tail of an unknown-name error.
struct Closest<'a>(&'a [String]);

impl fmt::Display for Closest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = self.0.iter().map(|n| format!("'{n}'")).collect();
        write!(f, "; the closest names are {} (see `incept inspect -O0`)", names.join(", "))
    }
}
