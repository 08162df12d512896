//! `compile`: an ONNX model (path or bytes) to a runnable [`incept_runtime::Model`]: import,
//! passes, lowering, memory planning, code generation.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use incept_ir::onnx::{self, ImportOptions};
use incept_ir::{DType, Graph};
use incept_runtime::{IoSpec, Kernel, Model, Need, Operand, Plan, RunOptions, Slot, Step};

use crate::codegen::{self, CodegenError};
use crate::lower::{self, LOperand, LowerError, Lowered, Place};
use crate::passes::{PassError, PassManager, PassOptions, Pipeline};
use crate::plan::{ArenaPlan, plan_arena};

/// What to compile from.
pub enum Source<'a> {
    Path(&'a Path),
    Bytes(Bytes),
}

impl<'a> From<&'a Path> for Source<'a> {
    fn from(p: &'a Path) -> Source<'a> {
        Source::Path(p)
    }
}

impl From<Bytes> for Source<'_> {
    fn from(b: Bytes) -> Self {
        Source::Bytes(b)
    }
}

/// A path given as text: `compile("model.onnx", &opts)`.
impl<'a> From<&'a str> for Source<'a> {
    fn from(p: &'a str) -> Source<'a> {
        Source::Path(Path::new(p))
    }
}

impl<'a> From<&'a std::path::PathBuf> for Source<'a> {
    fn from(p: &'a std::path::PathBuf) -> Source<'a> {
        Source::Path(p.as_path())
    }
}

impl<'a> From<&'a String> for Source<'a> {
    fn from(p: &'a String) -> Source<'a> {
        Source::Path(Path::new(p.as_str()))
    }
}

/// Model bytes already in memory.
impl From<Vec<u8>> for Source<'_> {
    fn from(b: Vec<u8>) -> Self {
        Source::Bytes(Bytes::from(b))
    }
}

/// Options of `compile`.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Input shapes and symbolic dims to fix.
    pub import: ImportOptions,
    /// Feature extraction: value names (as `incept inspect -O0` prints them) that become the
    /// model's outputs, in this order; only what they need is compiled. Empty: the model's own
    /// outputs. The cut happens before the passes, so these values stay materialised (see
    /// [`incept_ir::cut::cut`], which also says which inputs remain).
    pub outputs: Vec<String>,
    pub pipeline: Pipeline,
    pub disabled_passes: Vec<String>,
    pub passes: PassOptions,
    /// Worker threads of the compiled model (0: physical cores; 1: inline).
    pub threads: usize,
    /// Which instruction set the GEMM kernels use.
    pub cpu: Cpu,
    /// A deliberate miscompilation, for testing the tests (never set it otherwise).
    #[doc(hidden)]
    pub fault: Option<crate::Fault>,
    /// Packed conv panels above this many bytes are built and multiplied in bands of output
    /// rows (None: the default, 1 MiB). A test knob: a small value bands small convs.
    #[doc(hidden)]
    pub im2col_band_bytes: Option<usize>,
    /// Forces the Winograd tile where Winograd applies (2: F(2x2, 3x3), 4: F(4x4, 3x3))
    /// instead of the cost model's choice. A test knob.
    #[doc(hidden)]
    pub winograd_tile: Option<usize>,
    /// Let 3x3 convs use Winograd F(4x4, 3x3) where the cost model finds it faster than
    /// F(2x2, 3x3): 4-7% less latency on ResNet50 and InceptionV3 at one thread, for several
    /// times the rounding error (InceptionV3's output moves 1e-4 of its scale from ONNX Runtime's
    /// with it). Off by default, so that outputs stay within 1e-4 of the reference.
    pub winograd_f4: bool,
    /// The precision of convs with constant weights (f32 by default; see [`Precision`]).
    pub precision: Precision,
    /// The least share of lanes a bf16 implicit conv's rows must fill (None: the default, 0.85).
    /// A test knob: 0 takes every stride-1 conv it applies to.
    #[doc(hidden)]
    pub implicit_min_fill: Option<f64>,
    /// Stride-1 windowed int8 convs on the AVX512-VNNI tile over quad planes wherever they
    /// apply (true), never (false), or where their dropped columns cost less than the byte
    /// matrix (None, the default). A test knob.
    #[doc(hidden)]
    pub int8_planes: Option<bool>,
    /// With `Precision::Auto`: the largest output error (relative to each output's largest
    /// magnitude, against the f64 reference on `auto_inputs`) bf16 may introduce.
    pub auto_tolerance: f64,
    /// With `Precision::Auto`: the inputs the error is measured on (empty: seeded standard
    /// normal ones, as `incept check` makes).
    pub auto_inputs: Vec<incept_ir::Tensor>,
    /// In a bf16 plan, nodes of the optimised graph that stay f32 (what `Precision::Auto`
    /// chose; also settable by hand).
    pub f32_nodes: Vec<String>,
}

impl CompileOptions {
    fn knobs(&self) -> lower::Knobs {
        lower::Knobs {
            im2col_band_bytes: self.im2col_band_bytes,
            winograd: lower::WinogradChoice { forced: self.winograd_tile, f4: self.winograd_f4 },
            implicit_min_fill: self.implicit_min_fill,
            int8_planes: self.int8_planes,
            f32_nodes: self.f32_nodes.iter().cloned().collect(),
            int8_isa: self.cpu.int8_isa(),
        }
    }
}

impl Default for CompileOptions {
    fn default() -> CompileOptions {
        CompileOptions {
            import: ImportOptions::default(),
            outputs: vec![],
            pipeline: Pipeline::Full,
            disabled_passes: vec![],
            passes: PassOptions::default(),
            threads: 0,
            cpu: Cpu::Native,
            fault: None,
            im2col_band_bytes: None,
            winograd_tile: None,
            winograd_f4: false,
            precision: Precision::F32,
            implicit_min_fill: None,
            int8_planes: None,
            auto_tolerance: 1e-2,
            auto_inputs: vec![],
            f32_nodes: vec![],
        }
    }
}

/// The arithmetic of the linear ops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Everything in f32: results are f32 roundings of the reference, bit-stable.
    #[default]
    F32,
    /// Convs (dense, grouped, 1x1, strided) with constant weights, and Gemm and MatMul with
    /// constant weights (on AVX512-BF16), multiply in bf16: weights rounded to bf16 (to nearest
    /// even) once at compile time, activations rounded while their panels are packed, sums and
    /// the epilogue (bias, residual, activation) in f32. Everything else stays f32. Needs a CPU with AVX512-BF16 or AMX-BF16 (`Cpu::bf16_tier`). Results move
    /// by about 2^-9 of each product's size per rounding: `incept check --precision bf16`
    /// measures what that does to a model's outputs.
    Bf16,
    /// bf16 per node where the model's outputs stay within `CompileOptions::auto_tolerance` of
    /// the f64 reference, measured on seeded (or given) inputs; the nodes whose rounding moves
    /// the outputs most stay f32 (`CompileReport::auto` says which and why).
    Auto,
    /// A QDQ model's groups run as the integer ops they stand for (the `fuse-qdq` pass: QLinearConv,
    /// QLinearAdd), as ONNX Runtime runs them: exact integer sums where the literal QDQ reading
    /// rounds in f32, so outputs can move by a quantisation step or two from it (`incept check
    /// --precision int8` measures it). QOperator models are integer ops already, in any precision.
    Int8,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Auto => "auto",
            Precision::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Precision, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "auto" => Ok(Precision::Auto),
            "int8" => Ok(Precision::Int8),
            other => Err(format!("unknown precision '{other}' (f32, bf16, auto, int8)")),
        }
    }
}

/// The CPU a model is compiled for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cpu {
    /// The widest tier this CPU runs.
    #[default]
    Native,
    /// f32x4 only: runs on every x86-64 with SSE4.2 (x86-64-v2; and is the portable path elsewhere).
    Baseline,
    /// The AVX2 + FMA tier (the plan then needs those features to load).
    Avx2,
    /// The AVX-512F tier (the plan then needs AVX-512F, AVX2 and FMA to load).
    Avx512,
    /// The AVX-512 tier, with AVX512-BF16 kernels for bf16 (Zen 4, Cooper Lake and later).
    Avx512Bf16,
    /// The AVX-512 tier, with AVX512-VNNI kernels for int8 convs (Cascade Lake, Ice Lake and
    /// later, Zen 4 and later; the plan then also needs AVX512-BW and AVX512-VNNI to load).
    Avx512Vnni,
    /// The AVX2 tier, with AVX-VNNI kernels for int8 convs (Alder Lake and later clients; the
    /// plan then also needs AVX-VNNI to load).
    AvxVnni,
    /// The AVX-512 tier, with AMX tiles for bf16 (Sapphire Rapids and later; the plan then also
    /// needs the OS to grant the tile state). Experimental: not yet run on AMX hardware.
    Amx,
}

impl Cpu {
    pub fn tier(self) -> crate::codegen::Tier {
        use crate::codegen::Tier;
        match self {
            Cpu::Native => Tier::host(),
            Cpu::Baseline => Tier::F32x4,
            Cpu::Avx2 | Cpu::AvxVnni => Tier::Avx2,
            Cpu::Avx512 | Cpu::Avx512Bf16 | Cpu::Avx512Vnni | Cpu::Amx => Tier::Avx512,
        }
    }

    /// The instruction set of bf16 GEMMs: the one named, or for `native` AVX512-BF16 when this
    /// CPU has it (AMX only by name for now, see `Bf16Tier::host`); None for the tiers without
    /// bf16.
    pub fn bf16_tier(self) -> Option<crate::codegen::bf16::Bf16Tier> {
        use crate::codegen::bf16::Bf16Tier;
        match self {
            Cpu::Native if self.tier() == crate::codegen::Tier::Avx512 => Bf16Tier::host(),
            Cpu::Avx512Bf16 => Some(Bf16Tier::Avx512Bf16),
            Cpu::Amx => Some(Bf16Tier::Amx),
            _ => None,
        }
    }

    /// The int8 tile of ungrouped convs: AVX512-VNNI or AVX-VNNI where named (or implied, by
    /// avx512bf16 and amx; or `native` on a CPU that has them, AVX-512 first), else AVX2's
    /// exact VPMADDWD form on the tiers that have AVX2; None on the baseline tier (a scalar
    /// integer conv).
    pub fn int8_isa(self) -> Option<crate::codegen::int8::Int8Isa> {
        use crate::codegen::Tier;
        use crate::codegen::int8::Int8Isa;
        match self {
            Cpu::Avx512Vnni => Some(Int8Isa::Avx512Vnni),
            Cpu::AvxVnni => Some(Int8Isa::AvxVnni),
            Cpu::Baseline => None,
            Cpu::Native => match self.tier() {
                Tier::Avx512 if Int8Isa::Avx512Vnni.on_host() => Some(Int8Isa::Avx512Vnni),
                Tier::Avx2 | Tier::Avx512 if Int8Isa::AvxVnni.on_host() => Some(Int8Isa::AvxVnni),
                Tier::Avx2 | Tier::Avx512 => Some(Int8Isa::Avx2),
                _ => None,
            },
            // Every CPU with AVX512-BF16 or AMX also has AVX512-VNNI (Cooper Lake, Sapphire
            // Rapids, Zen 4 and later).
            Cpu::Avx512Bf16 | Cpu::Amx => Some(Int8Isa::Avx512Vnni),
            Cpu::Avx2 | Cpu::Avx512 => Some(Int8Isa::Avx2),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cpu::Native => "native",
            Cpu::Baseline => "baseline",
            Cpu::Avx2 => "avx2",
            Cpu::Avx512 => "avx512",
            Cpu::Avx512Bf16 => "avx512bf16",
            Cpu::Avx512Vnni => "avx512vnni",
            Cpu::AvxVnni => "avxvnni",
            Cpu::Amx => "amx",
        }
    }
}

impl CompileOptions {
    /// The bf16 instruction set the options ask for: None in f32; in bf16, the CPU's, or an
    /// error naming what the chosen CPU lacks.
    pub fn bf16_tier(&self) -> Result<Option<crate::codegen::bf16::Bf16Tier>, CompileError> {
        match self.precision {
            Precision::F32 | Precision::Int8 => Ok(None),
            Precision::Bf16 | Precision::Auto => self.cpu.bf16_tier().map(Some).ok_or_else(|| {
                CompileError::Precision(match self.cpu {
                    Cpu::Native => format!(
                        "--precision {} needs a CPU with AVX512-BF16 or AMX-BF16, and this one has neither (its widest tier is {}); compile with --cpu avx512bf16 or --cpu amx to build for another machine",
                        self.precision.name(),
                        self.cpu.tier().name()
                    ),
                    other => format!(
                        "--precision {} needs --cpu avx512bf16, amx or native (on a CPU with bf16); --cpu {} has no bf16 instructions",
                        self.precision.name(),
                        other.name()
                    ),
                })
            }),
        }
    }

    /// CPU features a plan compiled with these options needs.
    pub fn features(&self) -> Result<Vec<&'static str>, CompileError> {
        let mut f = self.cpu.tier().features();
        if let Some(t) = self.bf16_tier()? {
            f.extend(t.features().iter().filter(|x| !f.contains(x)).copied().collect::<Vec<_>>());
        }
        Ok(f)
    }
}

impl std::str::FromStr for Cpu {
    type Err = String;
    fn from_str(s: &str) -> Result<Cpu, String> {
        match s {
            "native" => Ok(Cpu::Native),
            "baseline" => Ok(Cpu::Baseline),
            "avx2" => Ok(Cpu::Avx2),
            "avx512" => Ok(Cpu::Avx512),
            "avx512bf16" => Ok(Cpu::Avx512Bf16),
            "avx512vnni" => Ok(Cpu::Avx512Vnni),
            "avxvnni" => Ok(Cpu::AvxVnni),
            "amx" => Ok(Cpu::Amx),
            other => Err(format!(
                "unknown CPU '{other}' (native, baseline, avx2, avxvnni, avx512, avx512bf16, avx512vnni, amx)"
            )),
        }
    }
}

/// Errors of `compile`.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Import(#[from] incept_ir::Error),
    #[error(transparent)]
    Passes(#[from] PassError),
    #[error(transparent)]
    Lower(#[from] LowerError),
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    /// (Not a `source`: the message carries it, and error chains would print it twice.)
    #[error("loading the compiled plan: {0}")]
    Runtime(incept_runtime::RunError),
    #[error("{0}")]
    Unsupported(String),
    /// Options refused before any work (e.g. a thread count over the runtime's limit).
    #[error(transparent)]
    Options(incept_runtime::RunError),
    /// A precision the chosen CPU cannot compute in.
    #[error("{0}")]
    Precision(String),
}

impl From<incept_runtime::RunError> for CompileError {
    fn from(e: incept_runtime::RunError) -> CompileError {
        CompileError::Runtime(e)
    }
}

/// A thread count the runtime would refuse, refused before compiling rather than after.
fn check_threads(options: &CompileOptions) -> Result<(), CompileError> {
    let run = incept_runtime::RunOptions { threads: options.threads };
    run.worker_threads().map(|_| ()).map_err(CompileError::Options)
}

/// What `--precision auto` chose, and why (see `auto.rs`).
#[derive(Clone, Debug, Default)]
pub struct AutoReport {
    pub tolerance: f64,
    /// Where the error was measured: "seeded" (standard normal, seed 0) or "given".
    pub inputs: &'static str,
    /// The largest output error (relative) of the all-bf16 plan and of the chosen one.
    pub all_bf16_error: f64,
    pub chosen_error: f64,
    /// Nodes computed in bf16 in the chosen plan.
    pub bf16_nodes: usize,
    /// Nodes kept in f32, with the error their bf16 rounding introduced locally (relative to
    /// the node output's largest magnitude), largest first.
    pub f32_nodes: Vec<(String, f64)>,
    /// Plans compiled and measured while choosing.
    pub trials: usize,
}

/// Time per stage and the size of what was produced.
#[derive(Clone, Debug, Default)]
pub struct CompileReport {
    pub stages: Vec<(&'static str, Duration)>,
    pub kernels: usize,
    pub steps: usize,
    pub code_bytes: usize,
    pub weight_bytes: usize,
    pub arena_bytes: usize,
    pub arena_lower_bound: usize,
    /// The arena buffers and their placement.
    pub memory: Vec<crate::plan::Placement>,
    /// Where every computed value of the compiled graph can be read during a run.
    pub values: Vec<ValueProbe>,
    /// What `Precision::Auto` chose.
    pub auto: Option<AutoReport>,
}

/// A computed value of the compiled graph and the probe that reads it during a run
/// ([`incept_runtime::Model::run_probed`]).
#[derive(Clone, Debug)]
pub struct ValueProbe {
    /// The value's name in the compiled graph.
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub probe: incept_runtime::Probe,
}

/// Compiles a model file or bytes.
pub fn compile<'a>(source: impl Into<Source<'a>>, options: &CompileOptions) -> Result<Model, CompileError> {
    Ok(compile_with_report(source, options)?.0)
}

/// Compiles and reports the time of each stage.
pub fn compile_with_report<'a>(
    source: impl Into<Source<'a>>,
    options: &CompileOptions,
) -> Result<(Model, CompileReport), CompileError> {
    let (plan, report) = compile_plan_with_report(source, options)?;
    load(plan, report, options)
}

/// Imports and compiles to the sealed plan, without loading it (see [`compile_graph_to_plan`]).
pub fn compile_plan_with_report<'a>(
    source: impl Into<Source<'a>>,
    options: &CompileOptions,
) -> Result<(Plan, CompileReport), CompileError> {
    let (g, import) = import(source, options)?;
    let (plan, mut report) = compile_graph_to_plan(g, options)?;
    report.stages.insert(0, ("import", import));
    Ok((plan, report))
}

/// Imports a model for compiling, and the time it took.
pub fn import<'a>(source: impl Into<Source<'a>>, options: &CompileOptions) -> Result<(Graph, Duration), CompileError> {
    check_threads(options)?;
    let start = Instant::now();
    let g = match source.into() {
        Source::Path(p) => onnx::load(p, &options.import)?,
        Source::Bytes(b) => onnx::load_bytes(b, &options.import)?,
    };
    Ok((g, start.elapsed()))
}

/// Loads a compiled plan on this CPU, timing it in the report.
fn load(
    plan: Plan,
    mut report: CompileReport,
    options: &CompileOptions,
) -> Result<(Model, CompileReport), CompileError> {
    let t = Instant::now();
    let model = Model::new(plan, &RunOptions { threads: options.threads })?;
    report.stages.push(("load", t.elapsed()));
    Ok((model, report))
}

/// Lowers an optimised graph and plans its memory, without generating code (for `inspect
/// --memory`): the arena plan and the names of the steps it refers to.
pub fn plan_memory(g: &Graph) -> Result<(ArenaPlan, Vec<String>, usize), CompileError> {
    let lowered = lower::lower(g)?;
    let arena = plan_arena(&lowered);
    let steps = lowered.steps.iter().map(|s| format!("{} ({})", s.name, s.op)).collect();
    Ok((arena, steps, lowered.weights.len()))
}

/// One step of a lowered plan, as `incept inspect --kernels` shows it.
#[derive(Clone, Debug)]
pub struct PlannedStep {
    /// The node of the optimised graph the step computes (or a part of it).
    pub node: String,
    /// What the step does: the node's op, or a part such as `Im2col` or `WinogradInput`.
    pub op: String,
    /// The kernel's name (several steps may share one kernel).
    pub kernel: String,
    /// The instruction set of its inner loop: the plan's wide tier (`avx2`, `avx512`) when the
    /// step runs an assembler microkernel, else `f32x4` (Cranelift code); a bf16 GEMM's bf16
    /// tier (`avx512bf16`, `amx`).
    pub tier: &'static str,
    /// Whether the step multiplies in bf16.
    pub bf16: bool,
    /// The types of the node's computed inputs and of its outputs (`f32[1,64,56,56]`); empty for
    /// a step that is no node's (the copy into a graph output).
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// How many tiles the iteration space is split into (the unit of parallel work).
    pub tiles: usize,
    pub flops: u64,
}

/// Lowers an optimised graph for `options.cpu` and lists the plan's steps with their kernels,
/// without generating code or running anything (for `inspect --kernels`). Also returns the
/// number of distinct kernels.
pub fn plan_steps(g: &Graph, options: &CompileOptions) -> Result<(Vec<PlannedStep>, usize), CompileError> {
    let tier = options.cpu.tier();
    let lowered = lower::lower_with(g, tier, options.bf16_tier()?, options.fault.as_ref(), &options.knobs())?;
    let nodes: std::collections::HashMap<&str, incept_ir::NodeId> =
        g.node_ids().map(|id| (g.node(id).name.as_str(), id)).collect();
    let ty = |v: incept_ir::ValueId| incept_ir::format::format_type(g.ty(v));
    // Only assembler kernels have machine code before code generation; ask each spec once.
    let is_asm: Vec<bool> = lowered.specs.iter().map(|s| s.machine_code().is_some()).collect();
    let steps = lowered
        .steps
        .iter()
        .map(|st| {
            let called = st.operands.iter().filter_map(|o| match o {
                LOperand::Kernel(k) => Some(*k),
                _ => None,
            });
            let asm = std::iter::once(st.kernel).chain(called).any(|k| is_asm.get(k).copied().unwrap_or(false));
            let (inputs, outputs) = match nodes.get(st.name.as_str()) {
                Some(&id) => {
                    let node = g.node(id);
                    let computed = node.input_values().filter(|&v| g.const_value(v).is_none()).map(ty).collect();
                    let outputs = (0..node.outputs.len()).map(|k| ty(incept_ir::ValueId::new(id, k))).collect();
                    (computed, outputs)
                }
                None => (vec![], vec![]),
            };
            let bf16 = lowered.specs[st.kernel].bf16();
            PlannedStep {
                node: st.name.clone(),
                op: st.op.clone(),
                kernel: lowered.specs[st.kernel].name(),
                tier: match bf16 {
                    Some(t) => t.name(),
                    None if asm => tier.name(),
                    None => codegen::Tier::F32x4.name(),
                },
                bf16: bf16.is_some(),
                inputs,
                outputs,
                tiles: st.tiles,
                flops: st.flops,
            }
        })
        .collect();
    Ok((steps, lowered.specs.len()))
}

/// What an artifact written from a plan compiled with `options` records about its making: this
/// compiler's version and the code generator's settings its machine code depends on.
pub fn artifact_info(options: &CompileOptions) -> incept_runtime::artifact::ArtifactInfo {
    let tier = options.cpu.tier();
    incept_runtime::artifact::ArtifactInfo {
        compiler: format!("incept {}", env!("CARGO_PKG_VERSION")),
        codegen: format!(
            "tier={}\nprecision={}\ncranelift isa flags={}\nfeatures={}",
            tier.name(),
            match options.bf16_tier() {
                Ok(Some(t)) => format!("{} ({})", options.precision.name(), t.name()),
                _ => "f32".into(),
            },
            tier.cranelift_flags().join(","),
            options.features().unwrap_or_else(|_| tier.features()).join(",")
        ),
        signed_by: None,
    }
}

/// Compiles an imported graph: cuts it at `options.outputs` when those are given, then runs the
/// passes.
pub fn compile_graph(g: Graph, options: &CompileOptions) -> Result<(Model, CompileReport), CompileError> {
    let (plan, report) = compile_graph_to_plan(g, options)?;
    load(plan, report, options)
}

/// [`compile_graph`] up to the sealed plan, without loading it: for artifacts written for
/// another CPU than this one.
pub fn compile_graph_to_plan(mut g: Graph, options: &CompileOptions) -> Result<(Plan, CompileReport), CompileError> {
    check_threads(options)?;
    if options.precision == Precision::Auto {
        // `driver` resolves auto into bf16 and the nodes kept in f32 before compiling.
        return Err(CompileError::Precision(
            "internal: --precision auto reached the compiler unresolved (use the crate-level compile functions)".into(),
        ));
    }
    let mut report = CompileReport::default();
    let t = Instant::now();
    if !options.outputs.is_empty() {
        incept_ir::cut::cut(&mut g, &options.outputs)?;
        report.stages.push(("cut", t.elapsed()));
    }
    let t = Instant::now();
    let passes = PassOptions { fuse_qdq: options.precision == Precision::Int8, ..options.passes.clone() };
    let pm = PassManager::new(&options.pipeline, &options.disabled_passes, passes)?;
    pm.run(&mut g)?;
    // The backend has no kernel for some composite ops: they are rewritten whatever the pipeline.
    if g.node_ids().any(|id| matches!(g.node(id).op, incept_ir::Op::Einsum(_) | incept_ir::Op::Attention(_))) {
        let names = ["decompose-einsum", "decompose-attention", "dead-code"].map(String::from).to_vec();
        PassManager::new(&Pipeline::Explicit(names), &[], options.passes.clone())?.run(&mut g)?;
    }
    report.stages.push(("passes", t.elapsed()));
    let t = Instant::now();
    let tier = options.cpu.tier();
    let mut lowered = lower::lower_with(&g, tier, options.bf16_tier()?, options.fault.as_ref(), &options.knobs())?;
    report.stages.push(("lowering", t.elapsed()));
    let t = Instant::now();
    let arena = plan_arena(&lowered);
    report.stages.push(("memory plan", t.elapsed()));
    let t = Instant::now();
    let isas = codegen::Isas::for_tier(tier)?;
    let blob = codegen::compile_all(&isas, &lowered.specs)?;
    report.stages.push(("codegen", t.elapsed()));
    let t = Instant::now();
    let weights = std::mem::take(&mut lowered.weights);
    let mut plan = assemble(&lowered, weights, &arena, blob)?;
    plan.features = options.features()?.iter().map(|f| f.to_string()).collect();
    // Features of the kernels the plan holds beyond its tier's (the int8 VNNI tile).
    for spec in &lowered.specs {
        for f in spec.features() {
            if !plan.features.iter().any(|x| x == f) {
                plan.features.push(f.to_string());
            }
        }
    }
    plan.seal();
    report.values = lowered
        .values
        .iter()
        .map(|v| {
            Ok(ValueProbe {
                name: g.value(v.value).name.clone(),
                dtype: g.ty(v.value).dtype,
                shape: g.ty(v.value).static_dims().unwrap_or_default(),
                probe: incept_runtime::Probe {
                    after_step: v.ready - 1,
                    at: operand(&lowered, &arena, v.at, false)?,
                    bytes: v.bytes,
                },
            })
        })
        .collect::<Result<_, CompileError>>()?;
    report.kernels = plan.kernels.len();
    report.steps = plan.steps.len();
    report.code_bytes = plan.code.len();
    report.weight_bytes = plan.weights.len();
    report.arena_bytes = arena.size;
    report.arena_lower_bound = arena.lower_bound;
    report.memory = arena.placements.clone();
    report.stages.push(("assembly", t.elapsed()));
    Ok((plan, report))
}

/// Where a buffer position is at run time, and the rest of its buffer from there (what the
/// kernel may touch through it).
fn operand(l: &Lowered, arena: &ArenaPlan, r: lower::BufRef, writes: bool) -> Result<Operand, CompileError> {
    let b = &l.buffers[r.buf];
    let extent = b.bytes.checked_sub(r.offset).ok_or_else(|| {
        CompileError::Unsupported(format!(
            "internal: an operand {} bytes into the {}-byte buffer '{}'",
            r.offset, b.bytes, b.name
        ))
    })?;
    let (slot, offset) = match b.place {
        Place::Arena => (Slot::Arena, arena.offsets[r.buf] + r.offset),
        Place::Weight(o) => (Slot::Weights, o + r.offset),
        Place::Input(k) => (Slot::Input(k), r.offset),
        Place::Output(k) => (Slot::Output(k), r.offset),
    };
    Ok(Operand { slot, offset, extent, writes })
}

/// The runtime plan: operands resolved to (slot, byte offset).
fn assemble(
    l: &Lowered,
    weights: incept_runtime::buffer::AlignedBuf,
    arena: &ArenaPlan,
    blob: codegen::CodeBlob,
) -> Result<Plan, CompileError> {
    let mut kernels: Vec<Kernel> = blob
        .offsets
        .iter()
        .zip(&l.specs)
        .map(|(&(offset, len), s)| Kernel { offset, len, name: s.name(), tiles: 0, operands: vec![], calls: vec![] })
        .collect();
    let steps = l
        .steps
        .iter()
        .map(|s| {
            let operands = s
                .operands
                .iter()
                .enumerate()
                .map(|(i, o)| match *o {
                    LOperand::Helpers => Ok(Operand::entry(Slot::Helpers)),
                    LOperand::Kernel(k) => Ok(Operand::entry(Slot::Kernel(k))),
                    LOperand::Buf(r) => operand(l, arena, r, s.written.get(i).copied().unwrap_or(false)),
                })
                .collect::<Result<_, _>>()?;
            Ok(Step {
                kernel: s.kernel,
                operands,
                tiles: s.tiles,
                name: s.name.clone(),
                op: s.op.clone(),
                flops: s.flops,
                check: s.check.clone(),
            })
        })
        .collect::<Result<Vec<Step>, CompileError>>()?;
    // A kernel's iteration space, operand directions and microkernels are its spec's: every step
    // calling it agrees. What its code touches through each operand is at most what the
    // smallest of them gives it there.
    for s in &steps {
        let calls: Vec<usize> = s
            .operands
            .iter()
            .filter_map(|o| match o.slot {
                Slot::Kernel(k) => Some(k),
                _ => None,
            })
            .collect();
        let k = &mut kernels[s.kernel];
        let agree = k.operands.is_empty()
            || (k.tiles == s.tiles
                && k.calls == calls
                && k.operands.len() == s.operands.len()
                && k.operands.iter().zip(&s.operands).all(|(n, o)| n.writes == o.writes));
        if !agree {
            return Err(CompileError::Unsupported(format!(
                "internal: the steps calling kernel {} disagree on its tiles, operands or microkernels",
                k.name
            )));
        }
        // A position every step fills from the weights holds constants (weights or tables).
        let constant = |o: &Operand| o.slot == Slot::Weights;
        if k.operands.is_empty() {
            let entry = |o: &Operand| matches!(o.slot, Slot::Helpers | Slot::Kernel(_));
            k.operands = s
                .operands
                .iter()
                .map(|o| Need { extent: o.extent, writes: o.writes, constant: constant(o), entry: entry(o) })
                .collect();
        } else {
            for (n, o) in k.operands.iter_mut().zip(&s.operands) {
                n.extent = n.extent.min(o.extent);
                n.constant &= constant(o);
            }
        }
        (k.tiles, k.calls) = (s.tiles, calls);
    }
    let io = |v: &[lower::Io], role: &str| -> Result<Vec<IoSpec>, CompileError> {
        v.iter()
            .map(|i| {
                let dtype = incept_runtime::DType::try_from(i.dtype).map_err(|_| {
                    CompileError::Unsupported(format!(
                        "graph {role} '{}' is {}: compiled models take and return f32, f64, integer and bool tensors, not {}",
                        i.name, i.dtype, i.dtype
                    ))
                })?;
                Ok(IoSpec { name: i.name.clone(), dtype, shape: i.shape.clone() })
            })
            .collect()
    };
    Ok(Plan {
        code: blob.code,
        kernels,
        steps,
        weights: weights.into(),
        arena_size: arena.size + crate::lower::ARENA_OVERREAD,
        status: l.status.map(|b| arena.offsets[b]),
        inputs: io(&l.inputs, "input")?,
        outputs: io(&l.outputs, "output")?,
        features: vec![],
        seal: [0; 32],
    })
}

/// An IR tensor as a runtime tensor (every dtype but f16).
pub fn to_runtime(t: &incept_ir::Tensor) -> Result<incept_runtime::Tensor, CompileError> {
    incept_runtime::Tensor::try_from(t).map_err(|e| CompileError::Unsupported(e.to_string()))
}

/// A runtime tensor as an IR tensor.
pub fn from_runtime(t: &incept_runtime::Tensor) -> Result<incept_ir::Tensor, CompileError> {
    Ok(incept_ir::Tensor::from(t))
}
