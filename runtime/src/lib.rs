//! incept's slim runtime: it will hold a compiled plan (kernels, weights, one arena), validate
//! inputs and run kernels in parallel. It must never depend on cranelift, petgraph or prost, so that
//! an application can link it alone; `tests/tests/runtime_deps.rs` checks that. The plan and its
//! executor arrive with the JIT backend.
