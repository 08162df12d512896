//! incept's compiler: optimisation passes over the graph IR (this crate), then lowering and code
//! generation, and the `incept` command-line tool.

pub mod codegen;
pub mod linalg;
pub mod passes;

pub use incept_ir as ir;
