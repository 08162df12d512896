//! `check`: the JIT against the reference interpreter on one model and one set of inputs. On a
//! mismatch it finds the node to blame: every intermediate value the compiled plan computes is
//! read during the run (probes, so the plan is exactly the one users run), and each node of the
//! optimised graph is evaluated by the interpreter on the JIT's own inputs to that node. The first
//! node, in execution order, whose JIT output differs from its local reference is the culprit.
//! When every node agrees locally but the outputs still differ, the passes are bisected instead:
//! the interpreter runs after every pass that changed the graph.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use incept_ir::graph::ValueId;
use incept_ir::text::print::node_text;
use incept_ir::{Graph, Op, Tensor, interp};
use rayon::prelude::*;

use crate::compile::{CompileError, CompileOptions, compile_graph, from_runtime, to_runtime};
use crate::passes::{PassError, PassManager, Pipeline};

/// What to check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Pipeline, disabled passes, threads and pass options of the compiled model.
    pub compile: CompileOptions,
    /// Largest accepted error relative to the largest magnitude of the reference output.
    pub tolerance: f64,
    /// Look for the node to blame even when every output is within the tolerance.
    pub always_bisect: bool,
}

/// Errors of `check`.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Passes(#[from] PassError),
    #[error("reference interpreter: {0}")]
    Reference(incept_ir::Error),
    #[error("running the compiled model: {0}")]
    Run(#[from] incept_runtime::RunError),
}

/// How far one tensor is from its reference.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Error {
    pub max_abs: f64,
    /// `max_abs` over the largest finite magnitude of the reference (or over 1 when that is
    /// below 1, so that values near zero are not judged by their relative error).
    pub max_rel: f64,
}

impl Error {
    /// Compares `got` with `want`. Shapes or dtypes that differ, and NaN where the reference
    /// has a number (or the reverse), count as an infinite error.
    pub fn of(got: &Tensor, want: &Tensor) -> Error {
        let inf = Error { max_abs: f64::INFINITY, max_rel: f64::INFINITY };
        if got.shape() != want.shape() || got.dtype() != want.dtype() {
            return inf;
        }
        let (Ok(g), Ok(w)) = (got.to_f64s(), want.to_f64s()) else { return inf };
        let scale = w.iter().filter(|v| v.is_finite()).fold(1f64, |m, v| m.max(v.abs()));
        let mut max_abs = 0f64;
        for (a, b) in g.iter().zip(&w) {
            let d = if a == b || (a.is_nan() && b.is_nan()) {
                0.0
            } else if a.is_finite() && b.is_finite() {
                (a - b).abs()
            } else {
                f64::INFINITY
            };
            max_abs = max_abs.max(d);
        }
        Error { max_abs, max_rel: max_abs / scale }
    }
}

/// One graph output: its name and its error.
#[derive(Clone, Debug)]
pub struct OutputCheck {
    pub name: String,
    pub error: Error,
}

/// A kernel call of the compiled plan.
#[derive(Clone, Debug)]
pub struct StepInfo {
    /// The step's op as profiles show it ("Conv", "Im2col", "WinogradOutput", ...).
    pub op: String,
    /// The kernel it calls (what it was specialised for).
    pub kernel: String,
}

/// A node of the optimised graph whose JIT output differs from the interpreter's on the same
/// (JIT-computed) inputs.
#[derive(Clone, Debug)]
pub struct NodeMismatch {
    pub node: String,
    pub op: String,
    /// The node in the IR text form, with its fused epilogue.
    pub text: String,
    /// The plan's steps for this node, in order.
    pub steps: Vec<StepInfo>,
    /// The output that differs.
    pub value: String,
    /// Error of the node alone (interpreter on the JIT's inputs).
    pub local: Error,
}

/// Who is to blame for a mismatch.
#[derive(Clone, Debug)]
pub enum Culprit {
    /// The first node (in execution order) whose kernels disagree with the interpreter, and how
    /// many nodes disagree in all.
    Node { first: Box<NodeMismatch>, mismatched: usize },
    /// Every node agrees with the interpreter, but the optimised graph computes something else
    /// than the imported one: the first pass after which the interpreter's outputs moved beyond
    /// the tolerance.
    Pass { pass: String, error: Error },
    /// Every node agrees within the tolerance and so do the passes: the difference is rounding
    /// accumulated over many nodes. The node with the largest local error, if any.
    Rounding { worst: Option<Box<NodeMismatch>> },
}

/// What bf16 did at one node: the node's compiled output against the interpreter on the same
/// (JIT-computed) inputs in f32, unrounded.
#[derive(Clone, Debug)]
pub struct Bf16Node {
    pub node: String,
    pub op: String,
    /// The bf16 instruction set of its GEMM.
    pub tier: &'static str,
    pub error: Error,
}

/// Everything `check` found.
#[derive(Clone, Debug)]
pub struct CheckReport {
    pub outputs: Vec<OutputCheck>,
    pub tolerance: f64,
    /// A bf16 plan: outputs differ from the reference by what bf16 rounding accumulates, so the
    /// verdict is the nodes' (each bf16 node against the interpreter on its inputs rounded to
    /// bf16 as its kernels round them, every other node as in f32); `bf16_nodes` lists the error
    /// bf16 introduced at each bf16 node, largest first.
    pub bf16: bool,
    pub bf16_nodes: Vec<Bf16Node>,
    /// The plan's precision (int8 plans are judged like bf16 ones: by their nodes).
    pub precision: crate::Precision,
    /// Present when an output is beyond the tolerance (or when asked for).
    pub culprit: Option<Culprit>,
    /// Time of each phase.
    pub timings: Vec<(&'static str, Duration)>,
}

impl CheckReport {
    /// Whether every output is within the tolerance; for a bf16 plan, whether every node's
    /// kernels agree with the interpreter (see `bf16`).
    pub fn passed(&self) -> bool {
        if self.bf16 {
            return !matches!(self.culprit, Some(Culprit::Node { .. }));
        }
        self.outputs.iter().all(|o| o.error.max_rel <= self.tolerance)
    }
}

/// Compiles `g` (imported, with static shapes), runs the JIT and the reference interpreter on
/// `inputs` and compares; on a mismatch finds the culprit (see the module documentation). With
/// `options.compile.outputs`, both sides run the graph cut at those values (then `inputs` are
/// the cut graph's, see [`incept_ir::cut::cut`]).
pub fn check(g: &Graph, inputs: &[Tensor], options: &CheckOptions) -> Result<CheckReport, CheckError> {
    let cut_graph;
    let g = if options.compile.outputs.is_empty() {
        g
    } else {
        let mut c = g.clone();
        incept_ir::cut::cut(&mut c, &options.compile.outputs).map_err(CompileError::from)?;
        cut_graph = c;
        &cut_graph
    };
    let mut timings = vec![];
    let t = Instant::now();
    let reference = interp::run(g, inputs).map_err(CheckError::Reference)?;
    timings.push(("reference interpreter", t.elapsed()));

    let t = Instant::now();
    let pm =
        PassManager::new(&options.compile.pipeline, &options.compile.disabled_passes, options.compile.passes.clone())?;
    let mut opt = g.clone();
    pm.run(&mut opt)?;
    // The graph is optimised here once, so that the compiled plan's values carry its names.
    let copts = CompileOptions {
        pipeline: Pipeline::None,
        disabled_passes: vec![],
        outputs: vec![],
        ..options.compile.clone()
    };
    let (model, report) = compile_graph(opt.clone(), &copts)?;
    timings.push(("passes and compile", t.elapsed()));

    let t = Instant::now();
    let rt = inputs.iter().map(to_runtime).collect::<Result<Vec<_>, _>>()?;
    let probes: Vec<_> = report.values.iter().map(|v| v.probe.clone()).collect();
    let (outs, bytes) = model.run_probed(&rt, &probes)?;
    timings.push(("compiled run", t.elapsed()));

    let names: Vec<String> = g.outputs().iter().map(|&v| g.value(v).name.clone()).collect();
    let mut outputs = vec![];
    for ((name, got), want) in names.iter().zip(&outs).zip(&reference) {
        let got = from_runtime(got)?;
        outputs.push(OutputCheck { name: name.clone(), error: Error::of(&got, want) });
    }
    // A reduced-precision plan (bf16, or int8's integer QDQ groups), or a quantized graph (its
    // QuantizeLinear nodes turn an f32 rounding at a halfway point into a whole step): outputs
    // differ from the reference by what it rounds, so the verdict is the nodes'.
    let quantized = g.node_ids().any(|id| matches!(g.node(id).op, incept_ir::Op::QuantizeLinear(_)));
    let bf16 =
        options.compile.bf16_tier()?.is_some() || options.compile.precision == crate::Precision::Int8 || quantized;
    let mut result = CheckReport {
        outputs,
        tolerance: options.tolerance,
        bf16,
        bf16_nodes: vec![],
        precision: options.compile.precision,
        culprit: None,
        timings,
    };
    if !bf16 && result.passed() && !options.always_bisect {
        return Ok(result);
    }

    let t = Instant::now();
    // The JIT's value of every computed node output, by name.
    let mut jit: HashMap<&str, Tensor> = HashMap::new();
    for (v, b) in report.values.iter().zip(bytes) {
        if let Ok(t) = Tensor::from_bytes(v.dtype, v.shape.clone(), b.into()) {
            jit.insert(v.name.as_str(), t);
        }
    }
    let (mismatches, bf16_nodes) = local_mismatches(&opt, inputs, &jit, options.tolerance, &model);
    result.bf16_nodes = bf16_nodes;
    result.timings.push(("node by node", t.elapsed()));
    if bf16 {
        // Outputs are not held to the f32 tolerance; the nodes are.
        if let Some(first) = mismatches.iter().find(|m| m.local.max_rel > options.tolerance) {
            let mismatched = mismatches.iter().filter(|m| m.local.max_rel > options.tolerance).count();
            result.culprit = Some(Culprit::Node { first: Box::new(first.clone()), mismatched });
        }
        return Ok(result);
    }
    let mismatched = mismatches.iter().filter(|m| m.local.max_rel > options.tolerance).count();
    result.culprit = Some(if let Some(first) = mismatches.iter().find(|m| m.local.max_rel > options.tolerance) {
        Culprit::Node { first: Box::new(first.clone()), mismatched }
    } else {
        let t = Instant::now();
        let culprit = match bisect_passes(g, inputs, &reference, &pm, options.tolerance)? {
            Some((pass, error)) => Culprit::Pass { pass, error },
            None => Culprit::Rounding {
                worst: mismatches
                    .into_iter()
                    .filter(|m| m.local.max_rel > 0.0)
                    .max_by(|a, b| a.local.max_rel.total_cmp(&b.local.max_rel))
                    .map(Box::new),
            },
        };
        result.timings.push(("pass bisection", t.elapsed()));
        culprit
    });
    Ok(result)
}

/// Every node of `g` evaluated by the interpreter on the JIT's values of its inputs, compared
/// with the JIT's value of its outputs; in execution order, one entry per node output that could
/// be compared. A node the plan multiplies in bf16 is evaluated on its input and weights rounded
/// to bf16 (what its kernels multiply); the error of its output against the unrounded
/// evaluation is the second list (what bf16 did there).
fn local_mismatches(
    g: &Graph,
    inputs: &[Tensor],
    jit: &HashMap<&str, Tensor>,
    tolerance: f64,
    model: &incept_runtime::Model,
) -> (Vec<NodeMismatch>, Vec<Bf16Node>) {
    let Ok(order) = g.topo_order() else { return (vec![], vec![]) };
    let graph_inputs: HashMap<ValueId, &Tensor> = g.input_values().into_iter().zip(inputs).collect();
    let value_of = |v: ValueId| -> Option<Tensor> {
        if let Some(t) = graph_inputs.get(&v) {
            return Some((*t).clone());
        }
        if let Some(t) = g.const_value(v) {
            return Some(t.clone());
        }
        jit.get(g.value(v).name.as_str()).cloned()
    };
    let found: Vec<(Vec<NodeMismatch>, Option<Bf16Node>)> = order
        .par_iter()
        .map(|&id| {
            let node = g.node(id);
            if matches!(node.op, Op::Input(_) | Op::Const(_)) {
                return (vec![], None);
            }
            let mut args = vec![];
            for i in node.inputs() {
                match i {
                    None => args.push(None),
                    Some(v) => match value_of(*v) {
                        Some(t) => args.push(Some(t)),
                        None => return (vec![], None),
                    },
                }
            }
            let steps = steps_of(model, &node.name);
            let bf16 = steps.iter().find_map(|s| crate::codegen::bf16::Bf16Tier::of_kernel(&s.kernel));
            let exact = bf16.and_then(|_| {
                let refs: Vec<Option<&Tensor>> = args.iter().map(|a| a.as_ref()).collect();
                node.op.eval(&refs).ok()
            });
            if bf16.is_some() {
                // The conv's input and weights, as its kernels round them.
                for a in args.iter_mut().take(2).flatten() {
                    *a = round_bf16(a);
                }
            }
            let refs: Vec<Option<&Tensor>> = args.iter().map(|a| a.as_ref()).collect();
            let Ok(want) = node.op.eval(&refs) else { return (vec![], None) };
            let bf16_node = match (bf16, exact.as_ref().and_then(|e| e.first()), jit.get(node.outputs[0].name.as_str()))
            {
                (Some(t), Some(exact), Some(got)) => Some(Bf16Node {
                    node: node.name.clone(),
                    op: node.op.name().to_string(),
                    tier: t.name(),
                    error: Error::of(got, exact),
                }),
                _ => None,
            };
            let mut out = vec![];
            for (k, (w, v)) in want.iter().zip(&node.outputs).enumerate() {
                let Some(got) = jit.get(v.name.as_str()) else { continue };
                let local = Error::of(got, w);
                // Only nodes that differ at all are kept; the caller picks by tolerance.
                if local.max_abs > 0.0 || local.max_rel > tolerance {
                    out.push(NodeMismatch {
                        node: node.name.clone(),
                        op: node.op.name().to_string(),
                        text: node_text(g, id),
                        steps: steps.clone(),
                        value: g.value(ValueId::new(id, k)).name.clone(),
                        local,
                    });
                }
            }
            (out, bf16_node)
        })
        .collect();
    let mut mismatches = vec![];
    let mut bf16_nodes = vec![];
    for (m, b) in found {
        mismatches.extend(m);
        bf16_nodes.extend(b);
    }
    bf16_nodes.sort_by(|a, b| b.error.max_rel.total_cmp(&a.error.max_rel));
    (mismatches, bf16_nodes)
}

/// An f32 tensor rounded to bf16 (other types as they are).
fn round_bf16(t: &Tensor) -> Tensor {
    match t.view::<f32>() {
        Ok(v) if t.dtype() == incept_ir::DType::F32 => Tensor::from_vec(
            t.shape().to_vec(),
            v.iter().map(|&x| crate::codegen::bf16::round_bf16(x)).collect::<Vec<f32>>(),
        ),
        _ => t.clone(),
    }
}

/// The plan's steps that belong to a node.
fn steps_of(model: &incept_runtime::Model, node: &str) -> Vec<StepInfo> {
    let plan = model.plan();
    plan.steps
        .iter()
        .filter(|s| s.name == node)
        .map(|s| StepInfo {
            op: s.op.clone(),
            kernel: plan.kernels.get(s.kernel).map(|k| k.name.clone()).unwrap_or_default(),
        })
        .collect()
}

/// Runs the passes again on the imported graph, interpreting after every pass that changed it;
/// the first pass after which an output is beyond the tolerance, with that error.
fn bisect_passes(
    g: &Graph,
    inputs: &[Tensor],
    reference: &[Tensor],
    pm: &PassManager,
    tolerance: f64,
) -> Result<Option<(String, Error)>, CheckError> {
    let mut first: Option<(String, Error)> = None;
    let mut work = g.clone();
    pm.run_observed(&mut work, &mut |pass, graph| {
        if first.is_some() {
            return;
        }
        let Ok(outs) = interp::run(graph, inputs) else {
            first = Some((pass.to_string(), Error { max_abs: f64::INFINITY, max_rel: f64::INFINITY }));
            return;
        };
        let worst = outs
            .iter()
            .zip(reference)
            .map(|(a, b)| Error::of(a, b))
            .max_by(|a, b| a.max_rel.total_cmp(&b.max_rel))
            .unwrap_or_default();
        if worst.max_rel > tolerance {
            first = Some((pass.to_string(), worst));
        }
    })?;
    Ok(first)
}

/// Seeded inputs for every graph input: floats standard normal, integers and booleans zero (their
/// meaning, such as indices, is unknown, and zero is valid wherever an index is). Graph inputs
/// need static shapes.
pub fn random_inputs(g: &Graph, seed: u64) -> Result<Vec<Tensor>, String> {
    let mut rng = incept_ir::text::parse::SplitMix(seed);
    let mut normal = move || {
        // Box-Muller on two uniforms in (0, 1].
        let u1 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    };
    g.input_values()
        .into_iter()
        .map(|v| {
            let ty = g.ty(v);
            let dims = ty.static_dims().ok_or_else(|| {
                let syms: Vec<String> = ty
                    .shape
                    .iter()
                    .filter_map(|d| match d {
                        incept_ir::shape::Dim::Sym(s) => Some(format!("--dim {s}=1")),
                        _ => None,
                    })
                    .collect();
                format!(
                    "input '{}' has the symbolic shape {ty}: give an input, or bind it (e.g. {})",
                    g.value(v).name,
                    syms.join(" ")
                )
            })?;
            let n: usize = dims.iter().product();
            Ok(match ty.dtype {
                incept_ir::DType::F32 => Tensor::from_vec(dims, (0..n).map(|_| normal() as f32).collect()),
                incept_ir::DType::F64 => Tensor::from_vec(dims, (0..n).map(|_| normal()).collect()),
                d => Tensor::zeros(d, dims).map_err(|e| e.to_string())?,
            })
        })
        .collect()
}
