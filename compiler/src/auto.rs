//! `--precision auto`: bf16 per node where the model's outputs stay within a tolerance of the
//! f64 reference, measured on seeded (or given) inputs.
//!
//! The all-bf16 plan is checked first (`check::check`): its kernels must agree with the
//! interpreter node by node, and it ranks the bf16 nodes by the error their own rounding
//! introduced (on the compiled model's inputs to them). If the outputs are within the tolerance,
//! every eligible node stays bf16. Otherwise the highest-ranked nodes go back to f32, in a
//! doubling count and then a binary search for the fewest, each candidate compiled and run on
//! the same inputs against the same reference: the chosen plan's error is measured, not
//! estimated.

use incept_ir::{Graph, interp};

use crate::check::{CheckOptions, Culprit, Error, check, random_inputs};
pub use crate::compile::AutoReport;
use crate::compile::{CompileError, CompileOptions, Precision, compile_graph, from_runtime, to_runtime};

/// Chooses the nodes that stay f32 (see the module documentation).
pub fn choose(g: &Graph, options: &CompileOptions) -> Result<(Vec<String>, AutoReport), CompileError> {
    let t = options.auto_tolerance;
    if !(t.is_finite() && t > 0.0) {
        return Err(CompileError::Precision(format!("--tolerance must be a positive number, got {t}")));
    }
    let mut cut;
    let g = if options.outputs.is_empty() {
        g
    } else {
        cut = g.clone();
        incept_ir::cut::cut(&mut cut, &options.outputs)?;
        &cut
    };
    let (inputs, source) = if options.auto_inputs.is_empty() {
        (random_inputs(g, 0).map_err(CompileError::Precision)?, "seeded")
    } else {
        (options.auto_inputs.clone(), "given")
    };
    let bf16 = CompileOptions { precision: Precision::Bf16, f32_nodes: vec![], outputs: vec![], ..options.clone() };
    let checked = check(g, &inputs, &CheckOptions { compile: bf16.clone(), tolerance: 1e-4, always_bisect: false })
        .map_err(|e| CompileError::Precision(format!("measuring bf16: {e}")))?;
    if let Some(Culprit::Node { first, .. }) = &checked.culprit {
        return Err(CompileError::Precision(format!(
            "bf16 kernels of node '{}' ({}) disagree with the interpreter (error {:.3e}): not a rounding error",
            first.node, first.op, first.local.max_rel
        )));
    }
    let worst = |errs: &[f64]| errs.iter().copied().fold(0f64, f64::max);
    let all = worst(&checked.outputs.iter().map(|o| o.error.max_rel).collect::<Vec<_>>());
    let ranked: Vec<(String, f64)> = checked.bf16_nodes.iter().map(|b| (b.node.clone(), b.error.max_rel)).collect();
    let mut report = AutoReport {
        tolerance: t,
        inputs: source,
        all_bf16_error: all,
        chosen_error: all,
        bf16_nodes: ranked.len(),
        f32_nodes: vec![],
        trials: 1,
    };
    if all <= t {
        return Ok((vec![], report));
    }
    let reference = interp::run(g, &inputs)?;
    // The optimised graph is what the plans are compiled from: node names as check ranked them.
    let measure = |count: usize| -> Result<f64, CompileError> {
        let opts = CompileOptions {
            f32_nodes: ranked[..count].iter().map(|(n, _)| n.clone()).collect(),
            outputs: vec![],
            ..bf16.clone()
        };
        let (model, _) = compile_graph(g.clone(), &opts)?;
        let rt = inputs.iter().map(to_runtime).collect::<Result<Vec<_>, _>>()?;
        let outs = model.run(&rt)?;
        let mut errs = vec![];
        for (got, want) in outs.iter().zip(&reference) {
            errs.push(Error::of(&from_runtime(got)?, want).max_rel);
        }
        Ok(worst(&errs))
    };
    // Doubling, then bisection between the last count over the tolerance and the first within.
    let (mut lo, mut hi, mut hi_err) = (0usize, None, f64::INFINITY);
    let mut count = 1;
    while count <= ranked.len() {
        report.trials += 1;
        let e = measure(count)?;
        if e <= t {
            hi = Some(count);
            hi_err = e;
            break;
        }
        lo = count;
        count = if count == ranked.len() { count + 1 } else { (count * 2).min(ranked.len()) };
    }
    let Some(mut hi) = hi else {
        return Err(CompileError::Precision(format!(
            "--tolerance {t:e} is below what even f32 reaches on these inputs: with every node in f32 the outputs differ from the f64 reference by {:.3e}",
            measure(ranked.len()).unwrap_or(f64::NAN)
        )));
    };
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        report.trials += 1;
        let e = measure(mid)?;
        if e <= t {
            hi = mid;
            hi_err = e;
        } else {
            lo = mid;
        }
    }
    report.chosen_error = hi_err;
    report.f32_nodes = ranked[..hi].to_vec();
    report.bf16_nodes = ranked.len() - hi;
    Ok((ranked[..hi].iter().map(|(n, _)| n.clone()).collect(), report))
}

/// The report as `compile` prints it.
pub fn describe(r: &AutoReport) -> String {
    let mut s = format!(
        "precision auto: {} node(s) in bf16, {} kept in f32; output error {:.3e} (all bf16: {:.3e}; tolerance {:e}, {} inputs, {} plan(s) measured)\n",
        r.bf16_nodes,
        r.f32_nodes.len(),
        r.chosen_error,
        r.all_bf16_error,
        r.tolerance,
        r.inputs,
        r.trials
    );
    for (n, e) in &r.f32_nodes {
        s.push_str(&format!("  f32: {}  (its bf16 rounding: {e:.3e} of its output)\n", crate::table::shorten(n, 60)));
    }
    s
}
