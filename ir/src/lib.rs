//! incept's graph IR: ONNX import, a petgraph-based graph with static (or symbolic) shapes, a text
//! form that prints and parses, a verifier, and the reference interpreter that defines what every
//! op means.

// Index loops read closest to the definitions they implement (the reference semantics).
#![allow(clippy::needless_range_loop)]

pub mod attrs;
pub mod cut;
pub mod dtype;
pub mod error;
pub mod format;
pub mod graph;
pub mod infer;
pub mod interp;
pub mod npy;
pub mod onnx;
pub mod ops;
pub mod shape;
pub mod stats;
pub mod tensor;
pub mod text;
pub mod verify;

pub use dtype::DType;
pub use error::{Error, OpError, Result};
pub use graph::{Graph, Node, NodeId, Value, ValueId};
pub use ops::Op;
pub use shape::{Dim, TensorType};
pub use tensor::Tensor;
