//! incept's compiler: optimisation passes over the graph IR (this crate), then lowering and code
//! generation, and the `incept` command-line tool.

pub mod auto;
pub mod check;
pub mod codegen;
pub mod compile;
pub mod fault;
pub mod linalg;
pub mod lower;
pub mod passes;
pub mod plan;
pub mod table;

pub use compile::{
    CompileOptions, CompileReport, Cpu, PlannedStep, Precision, ValueProbe, artifact_info, compile, compile_graph,
    compile_with_report, from_runtime, plan_memory, plan_steps, to_runtime,
};
pub use fault::Fault;
pub use incept_ir as ir;
