//! The crate's compile entry points: `compile.rs`'s, with `Precision::Auto` resolved first (by
//! `auto.rs`, which measures candidate plans with `compile.rs` and `check.rs`: this module sits
//! above all three, so none of them imports another in a circle).

use incept_ir::Graph;
use incept_runtime::{Model, Plan};

use crate::auto::{AutoReport, choose};
use crate::compile::{self, CompileError, CompileOptions, CompileReport, Precision, Source};

/// The options with `Precision::Auto` resolved: bf16 and the nodes `auto` keeps in f32, and
/// what it measured; any other precision as it is.
pub fn resolve(g: &Graph, options: &CompileOptions) -> Result<(CompileOptions, Option<AutoReport>), CompileError> {
    if options.precision != Precision::Auto {
        return Ok((options.clone(), None));
    }
    let (f32_nodes, report) = choose(g, options)?;
    Ok((CompileOptions { precision: Precision::Bf16, f32_nodes, ..options.clone() }, Some(report)))
}

/// Compiles an imported graph (see [`compile::compile_graph`]).
pub fn compile_graph(g: Graph, options: &CompileOptions) -> Result<(Model, CompileReport), CompileError> {
    resolved(g, options, compile::compile_graph)
}

/// Compiles an imported graph to the sealed plan (see [`compile::compile_graph_to_plan`]).
pub fn compile_graph_to_plan(g: Graph, options: &CompileOptions) -> Result<(Plan, CompileReport), CompileError> {
    resolved(g, options, compile::compile_graph_to_plan)
}

/// `compile` on the graph with the options resolved, `auto`'s choice and time in its report.
fn resolved<T>(
    g: Graph,
    options: &CompileOptions,
    compile: impl FnOnce(Graph, &CompileOptions) -> Result<(T, CompileReport), CompileError>,
) -> Result<(T, CompileReport), CompileError> {
    let start = std::time::Instant::now();
    let (resolved, auto) = resolve(&g, options)?;
    let (out, mut report) = compile(g, &resolved)?;
    if auto.is_some() {
        let compiled: std::time::Duration = report.stages.iter().map(|(_, d)| *d).sum();
        report.stages.insert(0, ("precision auto", start.elapsed().saturating_sub(compiled)));
    }
    report.auto = auto;
    Ok((out, report))
}

/// Imports and compiles, reporting each stage (see [`compile::compile_with_report`]).
pub fn compile_with_report<'a>(
    source: impl Into<Source<'a>>,
    options: &CompileOptions,
) -> Result<(Model, CompileReport), CompileError> {
    let (g, import) = compile::import(source, options)?;
    let (model, mut report) = compile_graph(g, options)?;
    report.stages.insert(0, ("import", import));
    Ok((model, report))
}

/// Imports and compiles to the sealed plan (see [`compile::compile_plan_with_report`]).
pub fn compile_plan_with_report<'a>(
    source: impl Into<Source<'a>>,
    options: &CompileOptions,
) -> Result<(Plan, CompileReport), CompileError> {
    let (g, import) = compile::import(source, options)?;
    let (plan, mut report) = compile_graph_to_plan(g, options)?;
    report.stages.insert(0, ("import", import));
    Ok((plan, report))
}

/// Imports and compiles an ONNX model.
pub fn compile<'a>(source: impl Into<Source<'a>>, options: &CompileOptions) -> Result<Model, CompileError> {
    Ok(compile_with_report(source, options)?.0)
}
