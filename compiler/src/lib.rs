//! incept's compiler: optimisation passes over the graph IR (this crate), then lowering and code
//! generation, and the `incept` command-line tool.

pub mod auto;
pub mod check;
pub mod codegen;
pub mod compile;
pub mod driver;
pub mod fault;
pub mod linalg;
pub mod lower;
pub mod passes;
pub mod plan;
pub mod table;

pub use compile::{
    CompileOptions, CompileReport, Cpu, PlannedStep, Precision, ValueProbe, artifact_info, from_runtime, plan_memory,
    plan_steps, to_runtime,
};
// The entry points resolve `Precision::Auto` (see `driver`).
pub use driver::{compile, compile_graph, compile_graph_to_plan, compile_plan_with_report, compile_with_report};
pub use fault::Fault;
pub use incept_ir as ir;
