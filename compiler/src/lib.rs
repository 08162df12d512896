//! incept's compiler: optimisation passes, lowering and code generation (arriving with their
//! issues), and the `incept` command-line tool. Today it drives the IR crate: import, inspection and
//! the reference interpreter.

pub use incept_ir as ir;
