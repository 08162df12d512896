//! `incept check`: the compiled model against the reference interpreter, and the node to blame
//! when they differ.

use std::path::PathBuf;

use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use incept_compiler::check::{CheckOptions, CheckReport, Culprit, NodeMismatch, OutputCheck, check, random_inputs};
use incept_ir::interp;

use crate::cli::compile::BackendArgs;
use crate::cli::out;
use crate::cli::run::load_inputs;
use crate::cli::shapes::load_model;

/// Check the compiled model against the reference interpreter on one set of inputs.
///
/// Compiles the model as `run` does, runs the compiled code and the reference interpreter on the
/// same inputs (the given ones, or seeded random ones: floats standard normal, integers zero) and
/// prints the largest absolute and relative error of every output. When an output differs by
/// more than the tolerance, it finds the first node of the optimised graph whose kernels disagree
/// with the interpreter on the same inputs to that node, and prints it with its fused epilogue
/// and the kernels it was compiled to; if every node agrees, it bisects the optimisation passes.
/// Exits with status 1 on a mismatch.
///
/// MODEL may also be an `.incept` artifact: give the ONNX model it was compiled from with
/// `--onnx`; its outputs are compared with the interpreter's on that model (cut to the artifact's
/// outputs). Finding the node to blame needs the compiler, so run `check` on the ONNX model with
/// the artifact's options for that.
#[derive(Args)]
pub struct CheckArgs {
    /// The ONNX model, or an `.incept` artifact (then with --onnx).
    model: PathBuf,
    /// For an artifact: the ONNX model it was compiled from (the reference).
    #[arg(long, value_name = "FILE.onnx")]
    onnx: Option<PathBuf>,
    /// An input: FILE.npy, NAME=FILE.npy, or a test data folder with input_N.pb (repeatable).
    /// Without inputs, seeded random ones are used.
    #[arg(long = "input", short = 'i', value_name = "FILE|NAME=FILE|DIR")]
    inputs: Vec<String>,
    /// Seed of the random inputs (when no input is given).
    #[arg(long, default_value_t = 0, value_name = "N")]
    seed: u64,
    /// Look for the node with the largest error even when every output is within the tolerance.
    #[arg(long)]
    bisect: bool,
    /// With --precision bf16: list the N bf16 nodes whose rounding moved their output most (each
    /// on the compiled model's own inputs to it, against the same node in f32).
    #[arg(long = "per-node", value_name = "N", default_value_t = 0)]
    per_node: usize,
    #[command(flatten)]
    backend: BackendArgs,
}

impl CheckArgs {
    /// Largest accepted error, relative to the largest magnitude of each reference output
    /// (`--tolerance`, default 1e-4; with --precision auto also the bound of its choice).
    fn tolerance(&self) -> f64 {
        self.backend.tolerance.unwrap_or(1e-4)
    }
}

pub fn run(a: CheckArgs) -> Result<()> {
    if a.tolerance().is_nan() || a.tolerance() < 0.0 {
        bail!("--tolerance must be a non-negative number, got {}", a.tolerance());
    }
    if crate::cli::is_artifact(&a.model) {
        return check_artifact(&a);
    }
    if a.onnx.is_some() {
        bail!("--onnx is for checking an .incept artifact; '{}' is not one", a.model.display());
    }
    let loaded = load_inputs(&a.inputs)?;
    let mut g = load_model(&a.model, &a.backend.shapes, &loaded.inputs, &loaded.sources, true)?;
    // Cut before making random inputs, which follow the cut graph's inputs.
    a.backend.cut.apply(&mut g)?;
    let inputs = if loaded.inputs.is_empty() {
        let t = random_inputs(&g, a.seed).map_err(anyhow::Error::msg)?;
        let desc: Vec<String> = g
            .input_values()
            .into_iter()
            .zip(&t)
            .map(|(v, t)| {
                let fill = if t.dtype().is_float() { "standard normal" } else { "zeros" };
                format!("'{}' {}{:?} {fill}", g.value(v).name, t.dtype(), t.shape())
            })
            .collect();
        out(&format!("inputs: random, seed {} ({})\n", a.seed, desc.join(", ")))?;
        t
    } else {
        interp::bind_inputs(&g, loaded.inputs)?
    };
    // Already cut above.
    let compile = incept_compiler::CompileOptions {
        outputs: vec![],
        auto_tolerance: a.tolerance(),
        auto_inputs: inputs.clone(),
        ..a.backend.options_checking(true)?
    };
    // --precision auto chooses on these inputs, then the chosen plan is checked.
    let (compile, auto) = incept_compiler::driver::resolve(&g, &compile)
        .with_context(|| format!("cannot check '{}'", a.model.display()))?;
    if let Some(auto) = &auto {
        out(&incept_compiler::auto::describe(auto))?;
    }
    let options = CheckOptions { compile, tolerance: a.tolerance(), always_bisect: a.bisect };
    let spinner =
        crate::cli::progress::Spinner::start("compiling, then running the model and the reference interpreter");
    let report = check(&g, &inputs, &options).with_context(|| format!("cannot check '{}'", a.model.display()))?;
    drop(spinner);
    out(&format_report_with(&report, a.per_node))?;
    if !report.passed() {
        bail!("the compiled model disagrees with the reference interpreter");
    }
    Ok(())
}

/// The artifact's outputs against the interpreter on the ONNX model it came from.
fn check_artifact(a: &CheckArgs) -> Result<()> {
    let Some(onnx) = &a.onnx else {
        bail!(
            "'{}' is an .incept artifact: give the ONNX model it was compiled from with --onnx FILE.onnx",
            a.model.display()
        );
    };
    if !a.backend.cut.outputs.is_empty() {
        bail!("--outputs cuts a model when it is compiled; the artifact's outputs are fixed (compile with --outputs)");
    }
    let model = crate::cli::load_artifact(&a.model, a.backend.threads, &Default::default())?;
    let plan = model.plan();
    // A bf16 artifact differs from the f64 reference by its rounding: only a bound the user
    // gives can judge that (node by node needs the compiler: check the ONNX model instead).
    if plan.features.iter().any(|f| f == "avx512bf16") && a.backend.tolerance.is_none() {
        bail!(
            "'{}' computes in bf16: its outputs differ from the reference by bf16 rounding; give --tolerance T to bound them, or run `incept check {} --precision bf16` to hold each node to its bf16 reference",
            a.model.display(),
            onnx.display()
        );
    }
    // The reference graph takes the artifact's input shapes and is cut to its outputs.
    let mut import = a.backend.shapes.import_options()?;
    for i in &plan.inputs {
        import.input_shapes.entry(i.name.clone()).or_insert_with(|| i.shape.clone());
    }
    let mut g = incept_ir::onnx::load(onnx, &import).with_context(|| format!("cannot load '{}'", onnx.display()))?;
    let names: Vec<&str> = plan.outputs.iter().map(|o| o.name.as_str()).collect();
    let graph_outputs: Vec<String> = g.outputs().iter().map(|&v| g.value(v).name.clone()).collect();
    if graph_outputs != names {
        incept_ir::cut::cut(&mut g, &names)
            .with_context(|| format!("the artifact's outputs are not values of '{}'", onnx.display()))?;
    }
    let loaded = load_inputs(&a.inputs)?;
    let inputs = if loaded.inputs.is_empty() {
        let t = random_inputs(&g, a.seed).map_err(anyhow::Error::msg)?;
        out(&format!("inputs: random, seed {}\n", a.seed))?;
        t
    } else {
        interp::bind_inputs(&g, loaded.inputs)?
    };
    let spinner = crate::cli::progress::Spinner::start("running the reference interpreter");
    let start = Instant::now();
    let reference = interp::run(&g, &inputs)?;
    let interp_time = start.elapsed();
    drop(spinner);
    let runtime_inputs: Vec<incept_runtime::Tensor> =
        inputs.iter().map(incept_runtime::Tensor::try_from).collect::<Result<_, _>>()?;
    let start = Instant::now();
    let got = model.run(&runtime_inputs)?;
    let run_time = start.elapsed();
    let report = CheckReport {
        outputs: got
            .iter_named()
            .zip(&reference)
            .map(|((name, t), want)| OutputCheck {
                name: name.to_string(),
                error: incept_compiler::check::Error::of(&incept_ir::Tensor::from(t), want),
            })
            .collect(),
        tolerance: a.tolerance(),
        bf16: false,
        bf16_nodes: vec![],
        precision: incept_compiler::Precision::F32,
        culprit: None,
        timings: vec![("interpreter", interp_time), ("artifact run", run_time)],
    };
    out(&format_report(&report))?;
    if !report.passed() {
        bail!(
            "the artifact disagrees with the reference interpreter; to find the node, run `incept check {}` with the options it was compiled with",
            onnx.display()
        );
    }
    Ok(())
}

fn mismatch_text(m: &NodeMismatch) -> String {
    let mut s = format!(
        "  node '{}' ({}), output '{}': max abs error {:.3e}, relative {:.3e}, on the JIT's own inputs to the node\n  {}\n",
        m.node, m.op, m.value, m.local.max_abs, m.local.max_rel, m.text
    );
    if m.steps.is_empty() {
        s.push_str("  kernels: none (a view of its input)\n");
    }
    for st in &m.steps {
        s.push_str(&format!("  kernel: {} ({})\n", st.op, st.kernel));
    }
    s
}

pub fn format_report(r: &CheckReport) -> String {
    format_report_with(r, 0)
}

/// The report, with the `per_node` bf16 nodes whose rounding moved their outputs most.
pub fn format_report_with(r: &CheckReport, per_node: usize) -> String {
    let mut s = String::new();
    if r.bf16 {
        s.push_str(&match r.precision {
            incept_compiler::Precision::F32 => {
                "quantized graph: outputs against the f64 reference (an f32 rounding at a halfway point is a whole step after QuantizeLinear):\n".to_string()
            }
            p => format!("precision {}: outputs against the f64 reference (the error it introduced):\n", p.name()),
        });
    }
    for o in &r.outputs {
        let reduced = match r.precision {
            incept_compiler::Precision::F32 => "(quantized)".to_string(),
            p => format!("({})", p.name()),
        };
        let verdict = if r.bf16 {
            reduced.as_str()
        } else if o.error.max_rel <= r.tolerance {
            "ok"
        } else {
            "MISMATCH"
        };
        s.push_str(&format!(
            "output '{}': max abs error {:.3e}, relative {:.3e}  {verdict}\n",
            o.name, o.error.max_abs, o.error.max_rel
        ));
    }
    let times: Vec<String> = r.timings.iter().map(|(n, d)| format!("{n} {:.2} s", d.as_secs_f64())).collect();
    s.push_str(&format!("time: {}\n", times.join(", ")));
    match &r.culprit {
        None => {}
        Some(Culprit::Node { first, mismatched }) => {
            s.push_str(&format!(
                "first node whose compiled kernels disagree with the interpreter ({mismatched} node output(s) beyond the tolerance in all):\n{}",
                mismatch_text(first)
            ));
        }
        Some(Culprit::Pass { pass, error }) => s.push_str(&format!(
            "every node's kernels agree with the interpreter; the optimised graph itself differs: after pass '{pass}' the interpreter's outputs are off by {:.3e} (relative)\n",
            error.max_rel
        )),
        Some(Culprit::Rounding { worst }) => {
            s.push_str("every node agrees with the interpreter within the tolerance, and so do the passes: the difference is accumulated rounding\n");
            if let Some(w) = worst {
                s.push_str(&format!("largest error of a single node:\n{}", mismatch_text(w)));
            }
        }
    }
    if r.bf16 {
        let n = r.bf16_nodes.len();
        if per_node > 0 {
            s.push_str(&format!(
                "bf16 nodes by the error their rounding introduced (on the JIT's own inputs, relative to the node output's largest magnitude), {} of {n}:\n",
                per_node.min(n)
            ));
            for b in r.bf16_nodes.iter().take(per_node) {
                s.push_str(&format!(
                    "  {:.3e}  {} ({}, {})\n",
                    b.error.max_rel,
                    incept_compiler::table::shorten(&b.node, 60),
                    b.op,
                    b.tier
                ));
            }
        } else if let Some(worst) = r.bf16_nodes.first() {
            s.push_str(&format!(
                "{n} node(s) in bf16; the largest error one introduced: {:.3e} at '{}' (--per-node N lists them)\n",
                worst.error.max_rel, worst.node
            ));
        }
        if r.passed() {
            s.push_str(&format!(
                "PASS: every node's kernels agree within {:e} with the interpreter on the node's inputs (bf16 nodes on them rounded to bf16)\n",
                r.tolerance
            ));
        } else {
            s.push_str(&format!(
                "FAIL: a node's kernels differ from the interpreter by more than {:e} (bf16 nodes on their inputs rounded to bf16)\n",
                r.tolerance
            ));
        }
        return s;
    }
    if r.passed() {
        s.push_str(&format!("PASS: every output within {:e} of the reference interpreter\n", r.tolerance));
    } else {
        s.push_str(&format!("FAIL: an output differs from the reference interpreter by more than {:e}\n", r.tolerance));
    }
    s
}
