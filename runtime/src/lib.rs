//! incept's slim runtime: it holds a compiled plan (machine code, packed weights, the step list
//! and the arena size), validates inputs and runs the kernels, in parallel over their tiles.
//!
//! It never depends on cranelift, petgraph or prost (a workspace test checks the dependency
//! tree), so an application can link it alone: compile a model once with
//! `incept compile model.onnx -o model.incept` and load the artifact here.
//!
//! ```no_run
//! use incept_runtime::{Model, RunOptions, npy};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = Model::load("mini_resnet.incept", &RunOptions { threads: 0 })?; // 0: physical cores
//! let outputs = model.run(&[npy::read("input.npy")?])?;
//! let scores = outputs.get("output")?; // or outputs[0]
//! for (class, score) in scores.top_k(5)? {
//!     println!("{class} {score}");
//! }
//! # Ok(())
//! # }
//! ```

pub mod artifact;
pub mod buffer;
pub mod code;
pub mod cpu;
pub mod error;
pub mod file;
pub mod helpers;
pub mod model;
pub mod npy;
pub mod plan;
pub mod pool;
pub mod signal;
pub mod signature;
pub mod tensor;

pub use error::RunError;
pub use model::{Model, Outputs, Probe, RunOptions, StepTiming, TraceEvent};
pub use plan::{IoSpec, Kernel, KernelFn, Need, Operand, Plan, Slot, Step};
pub use tensor::{DType, Element, Tensor, TensorError, TensorMut, TensorRef, top_k};
