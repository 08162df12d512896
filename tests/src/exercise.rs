//! Takes one model as far through incept as it goes: import, verification, the text form, the
//! reference interpreter, the passes, lowering and code generation, and a run of the compiled
//! model. Errors anywhere are fine (they are the expected answer to a bad model); the fuzz targets
//! and the smoke test only require that nothing panics. Budgets keep every case cheap: only small
//! models are interpreted, compiled and run.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use bytes::Bytes;
use incept_compiler::passes::{PassManager, PassOptions, Pipeline};
use incept_compiler::{CompileOptions, compile_graph, to_runtime};
use incept_ir::onnx::{self, ImportOptions};
use incept_ir::stats::Stats;
use incept_ir::text::{self, ConstPool};
use incept_ir::{DType, Graph, Tensor, interp, verify};

/// How much work one case may cost.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Larger models are not even imported.
    pub max_model_bytes: usize,
    /// Graphs above either limit stop after the passes.
    pub max_macs: u64,
    pub max_value_bytes: usize,
    pub max_nodes: usize,
    /// Kernel positions of all windowed ops together (the JIT unrolls them).
    pub max_taps: u64,
    /// Whether to interpret, optimise (-O2, else -O0), and compile and run the graphs within
    /// the limits.
    pub interpret: bool,
    pub optimize: bool,
    pub compile: bool,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            max_model_bytes: 1 << 20,
            max_macs: 1 << 20,
            max_value_bytes: 1 << 20,
            max_nodes: 64,
            max_taps: 1024,
            interpret: true,
            optimize: true,
            compile: true,
        }
    }
}

/// The stages of one case, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Import,
    Verify,
    TextForm,
    Bind,
    Interpret,
    Passes,
    Compile,
    Run,
}

/// How one case ended: the stages that succeeded, and the first one that returned an error (later
/// stages that do not depend on it still run: the interpreter failing does not stop compilation).
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub passed: Vec<Stage>,
    pub failed: Vec<(Stage, String)>,
    /// Stages skipped because the graph is over budget.
    pub over_budget: bool,
    /// The compiled model's outputs differ from the interpreter's.
    pub mismatch: Option<String>,
}

impl Outcome {
    fn result<T, E: fmt::Display>(&mut self, stage: Stage, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => {
                self.passed.push(stage);
                Some(v)
            }
            Err(e) => {
                self.failed.push((stage, e.to_string()));
                None
            }
        }
    }

    /// Errors that a graph which imported and verified should never give: the printed text form
    /// must parse back.
    pub fn invariant_breaks(&self) -> Vec<&(Stage, String)> {
        self.failed.iter().filter(|(s, _)| *s == Stage::TextForm).collect()
    }

    /// Panics on a broken invariant or a compiled model that disagrees with the interpreter, so
    /// that a fuzz target reports them like crashes.
    pub fn assert_consistent(&self) {
        if let Some((_, e)) = self.invariant_breaks().first() {
            panic!("the printed form of a verified graph does not parse back: {e}");
        }
        if let Some(m) = &self.mismatch {
            panic!("the compiled model disagrees with the interpreter: {m}");
        }
    }
}

/// Imports model bytes and takes the graph as far as it goes.
pub fn exercise_bytes(bytes: &[u8], budget: &Budget) -> Outcome {
    let mut out = Outcome::default();
    if bytes.len() > budget.max_model_bytes {
        out.over_budget = true;
        return out;
    }
    let Some(g) = out.result(Stage::Import, onnx::load_bytes(Bytes::copy_from_slice(bytes), &ImportOptions::default()))
    else {
        return out;
    };
    exercise_graph(g, budget, out)
}

/// Takes an imported or parsed graph through verification, the text form, the interpreter, the
/// passes and the backend.
pub fn exercise_graph(g: Graph, budget: &Budget, mut out: Outcome) -> Outcome {
    if out.result(Stage::Verify, verify::verify(&g)).is_none() {
        return out;
    }
    let printed = match text::print(&g) {
        Ok(p) => p,
        Err(e) => {
            out.failed.push((Stage::TextForm, format!("print: {e}")));
            return out;
        }
    };
    out.result(Stage::TextForm, text::parse_with(&printed, &ConstPool::from_graph(&g)));
    // Symbolic dims (a dynamic batch) bind to 1, as `incept run` would for a batch of one.
    let mut g = g;
    let symbols: HashMap<String, usize> = g.symbols().into_iter().map(|s| (s, 1)).collect();
    if !symbols.is_empty() && out.result(Stage::Bind, g.bind_dims(&symbols)).is_none() {
        return out;
    }
    let stats = Stats::of(&g);
    let largest = stats.largest.as_ref().map_or(0, |l| l.2);
    let input_bytes: usize =
        g.input_values().iter().map(|&v| g.ty(v).numel().unwrap_or(0) * g.ty(v).dtype.size()).sum();
    let (work, taps) = window_work(&g);
    let small = stats.total_macs.saturating_add(work) <= budget.max_macs
        && taps <= budget.max_taps
        && largest.max(input_bytes) <= budget.max_value_bytes
        && g.node_count() <= budget.max_nodes;
    if !small {
        out.over_budget = true;
        // The passes only look at shapes and constants, so they stay affordable.
        let mut opt = g;
        out.result(Stage::Passes, passes().and_then(|pm| pm.run(&mut opt).map_err(|e| e.to_string())));
        return out;
    }
    let inputs = small_inputs(&g);
    let reference = if budget.interpret { out.result(Stage::Interpret, interp::run(&g, &inputs)) } else { None };
    // The JIT computes in f32 where the interpreter uses f64: with huge or infinite weights the
    // two round differently (f32 overflows to inf, cancellations differ), so only tame graphs
    // are compared.
    let reference = reference.filter(|_| tame_constants(&g));
    let mut g = g;
    if budget.optimize
        && out.result(Stage::Passes, passes().and_then(|pm| pm.run(&mut g).map_err(|e| e.to_string()))).is_none()
    {
        return out;
    }
    if !budget.compile {
        return out;
    }
    // The passes ran above (or were not asked for): compile the graph as it is.
    let options = CompileOptions { threads: 1, pipeline: Pipeline::None, ..Default::default() };
    let Some((model, _)) = out.result(Stage::Compile, compile_graph(g, &options)) else { return out };
    let runtime_inputs = match inputs.iter().map(to_runtime).collect::<Result<Vec<_>, _>>() {
        Ok(t) => t,
        Err(e) => {
            out.failed.push((Stage::Run, e.to_string()));
            return out;
        }
    };
    let Some(got) = out.result(Stage::Run, model.run(&runtime_inputs)) else { return out };
    if let Some(want) = reference {
        out.mismatch = compare(&got, &want);
    }
    out
}

/// Whether every float constant of the graph is finite and at most 1e4 in magnitude (integer
/// ones are shapes and indices, exact either way).
fn tame_constants(g: &Graph) -> bool {
    g.node_ids().all(|id| match &g.node(id).op {
        incept_ir::Op::Const(c) if matches!(c.value.dtype(), DType::F32 | DType::F64) => {
            c.value.to_f64s().is_ok_and(|v| v.iter().all(|x| x.abs() <= 1e4))
        }
        _ => true,
    })
}

/// Where the compiled model and the interpreter disagree beyond rounding. Elements where either
/// side is NaN are not compared: NaN handling differs between the interpreter (`Relu(NaN)` is 0
/// there, as f64::max gives) and the JIT (NaN, as Cranelift's fmax and ONNX give), which mutated
/// weights (an inf times 0) reach all the time.
fn compare(got: &[incept_runtime::Tensor], want: &[Tensor]) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("{} outputs, the interpreter gives {}", got.len(), want.len()));
    }
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let Ok(g) = incept_compiler::from_runtime(g) else { continue };
        if g.shape() != w.shape() {
            return Some(format!("output {k}: shape {:?}, the interpreter gives {:?}", g.shape(), w.shape()));
        }
        let (Ok(gv), Ok(wv)) = (g.to_f64s(), w.to_f64s()) else { continue };
        // Values beyond f32's comfortable range (exp of a large input, say) are not compared.
        let comparable = |v: f64| v.abs() <= 1e6;
        let scale = wv.iter().filter(|v| comparable(**v)).fold(1f64, |m, v| m.max(v.abs()));
        let differs = |i: usize| !(gv[i].is_nan() || (gv[i] - wv[i]).abs() <= 1e-3 * scale);
        if let Some(i) = (0..wv.len()).find(|&i| comparable(wv[i]) && differs(i)) {
            return Some(format!("output {k}, element {i}: {} vs the interpreter's {}", gv[i], wv[i]));
        }
    }
    None
}

/// Work the MAC count leaves out: pools visit every kernel position per output (SAME padding
/// lets a kernel be far larger than its input), and an antialiased Resize reads about
/// `4 * d_in / d_out` taps per output along each shrunk axis. Also the total kernel positions of
/// the windowed ops, which the JIT unrolls (code size and compile time grow with them).
fn window_work(g: &Graph) -> (u64, u64) {
    let (mut work, mut taps) = (0u64, 0u64);
    let positions = |w: &incept_ir::ops::conv::Window| w.kernel.iter().fold(1u64, |a, &k| a.saturating_mul(k as u64));
    for id in g.node_ids() {
        let node = g.node(id);
        let window = match &node.op {
            incept_ir::Op::Conv(c) => Some(&c.window),
            incept_ir::Op::ConvTranspose(c) => Some(&c.window),
            incept_ir::Op::Pool(p) => Some(&p.window),
            incept_ir::Op::Fused(f) => match f.base.as_ref() {
                incept_ir::Op::Conv(c) => Some(&c.window),
                _ => None,
            },
            _ => None,
        };
        taps = taps.saturating_add(window.map_or(0, positions));
        let out = node.outputs.first().and_then(|v| v.ty.numel()).unwrap_or(0) as u64;
        let per_output = match &node.op {
            incept_ir::Op::Pool(p) => positions(&p.window),
            incept_ir::Op::Resize(_) => {
                let (Some(x), Some(y)) = (node.inputs().first().copied().flatten(), node.outputs.first()) else {
                    continue;
                };
                let (xs, ys) = (g.ty(x).static_dims().unwrap_or_default(), y.ty.static_dims().unwrap_or_default());
                xs.iter().zip(&ys).fold(4u64, |a, (&i, &o)| a.saturating_mul((4 * i / o.max(1)).max(1) as u64))
            }
            _ => continue,
        };
        work = work.saturating_add(out.saturating_mul(per_output));
    }
    (work, taps)
}

fn passes() -> Result<PassManager, String> {
    PassManager::new(&Pipeline::Full, &[], PassOptions::default()).map_err(|e| e.to_string())
}

/// Small deterministic values for every graph input: a repeating -1, 0, 1, 2 for numbers (valid
/// indices for small dims, and no overflow anywhere), false/true for booleans.
pub fn small_inputs(g: &Graph) -> Vec<Tensor> {
    g.input_values()
        .iter()
        .filter_map(|&v| {
            let ty = g.ty(v);
            let dims = ty.static_dims()?;
            let n: usize = dims.iter().product();
            let pattern = |i: usize| (i % 4) as i64 - 1;
            Some(match ty.dtype {
                DType::F32 => Tensor::from_vec(dims, (0..n).map(|i| pattern(i) as f32).collect()),
                DType::F64 => Tensor::from_vec(dims, (0..n).map(|i| pattern(i) as f64).collect()),
                DType::I64 => Tensor::from_vec(dims, (0..n).map(|i| pattern(i).max(0)).collect()),
                DType::I32 => Tensor::from_vec(dims, (0..n).map(|i| pattern(i).max(0) as i32).collect()),
                DType::Bool => Tensor::from_bools(dims, (0..n).map(|i| i % 2 == 1).collect()),
                d => Tensor::zeros(d, dims).ok()?,
            })
        })
        .collect()
}

/// Counts over many cases: how far they got and where they stopped.
#[derive(Default)]
pub struct Tally {
    pub cases: usize,
    pub over_budget: usize,
    /// Cases that passed each stage.
    pub passed: BTreeMap<Stage, usize>,
    /// Cases that stopped with an error at each stage.
    pub failed: BTreeMap<Stage, usize>,
    pub mismatches: usize,
}

impl Tally {
    pub fn add(&mut self, o: &Outcome) {
        self.cases += 1;
        self.over_budget += o.over_budget as usize;
        for s in &o.passed {
            *self.passed.entry(*s).or_default() += 1;
        }
        for (s, _) in &o.failed {
            *self.failed.entry(*s).or_default() += 1;
        }
        self.mismatches += o.mismatch.is_some() as usize;
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cases ({} over budget for the later stages)", self.cases, self.over_budget)?;
        let stages = self.passed.keys().chain(self.failed.keys()).copied().collect::<std::collections::BTreeSet<_>>();
        for s in stages {
            let p = self.passed.get(&s).copied().unwrap_or(0);
            let e = self.failed.get(&s).copied().unwrap_or(0);
            write!(f, "\n  {s:?}: {p} ok, {e} errors")?;
        }
        write!(f, "\n  compiled outputs differing from the interpreter's: {}", self.mismatches)
    }
}
