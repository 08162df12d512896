//! incept's slim runtime: it holds a compiled plan (machine code, packed weights, the step list
//! and the arena size), validates inputs and runs the kernels, in parallel over their tiles.
//!
//! It never depends on cranelift, petgraph or prost (a workspace test checks the dependency
//! tree), so an application can link it alone; a plan is plain data that a later stage can write
//! to a file and load again.

pub mod artifact;
pub mod buffer;
pub mod code;
pub mod cpu;
pub mod error;
pub mod helpers;
pub mod model;
pub mod npy;
pub mod plan;
pub mod tensor;

pub use error::RunError;
pub use model::{Model, Outputs, Probe, RunOptions, StepTiming, TraceEvent};
pub use plan::{IoSpec, Kernel, KernelFn, Operand, Plan, Slot, Step};
pub use tensor::{DType, Element, Tensor, TensorError, TensorMut, TensorRef, top_k};
