//! `incept compile`: compile a model to machine code and report what it took.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use incept_compiler::passes::{PassOptions, Pipeline};
use incept_compiler::{CompileOptions, CompileReport, Cpu, Fault};

use crate::cli::out;
use crate::cli::shapes::{CutArgs, ShapeArgs};

/// Options shared by compile, run and bench.
#[derive(Args, Clone, Debug)]
pub struct BackendArgs {
    /// Worker threads of the compiled model (0 = physical cores; 1 runs inline without a pool;
    /// at most four per logical CPU)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub threads: usize,
    /// Optimisation level of the graph passes (0, 1 or 2; see `incept inspect`).
    #[arg(short = 'O', default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=2), value_name = "LEVEL")]
    pub level: u8,
    /// Leave a pass out (repeatable).
    #[arg(long = "disable-pass", value_name = "NAME")]
    pub disable: Vec<String>,
    #[command(flatten)]
    pub shapes: ShapeArgs,
    #[command(flatten)]
    pub cut: CutArgs,
    /// The CPU to compile for: native (the widest tier this CPU runs), baseline (f32x4 only, runs
    /// on every x86-64 with SSE4.2), avx2 (x86-64-v3: AVX2 + FMA GEMM kernels; int8 convs on an
    /// exact VPMADDWD tile), avxvnni (avx2, with AVX-VNNI int8 conv kernels: Alder Lake and later),
    /// avx512 (also AVX-512F GEMM kernels), avx512bf16 or amx (avx512, with those bf16 kernels for
    /// --precision bf16; native uses avx512bf16 where the CPU has it), avx512vnni (avx512, with
    /// the VNNI int8 conv kernels for quantized models; native uses the widest int8 kernels the CPU has); amx is experimental: its
    /// kernels have not yet run on AMX hardware); a plan for a tier this CPU lacks is refused when
    /// it loads, naming the missing features.
    #[arg(long, default_value = "native", value_name = "CPU")]
    pub cpu: Cpu,
    /// The arithmetic of convs, Gemm and MatMul with constant weights: f32 (the default:
    /// bit-stable, within f32 rounding of the reference) or bf16 (opt-in: weights rounded to bf16 at compile time,
    /// activations while they are packed, sums and epilogues in f32; needs AVX512-BF16 or AMX,
    /// see --cpu). bf16 changes results by about 2^-9 of each product: `incept check --precision
    /// bf16` measures by how much on a model.
    /// `auto` keeps in f32 the nodes whose bf16 rounding moves the outputs beyond --tolerance
    /// (measured against the f64 reference on seeded inputs, or the given ones) and reports them.
    /// `int8` (opt-in) runs a QDQ model's groups as the integer ops they stand for, as ONNX Runtime
    /// does (on the VNNI tile where the CPU has it): outputs can move by a quantisation step or two
    /// from the literal f32 reading of the QDQ graph; `incept check --precision int8` measures it.
    /// QOperator models (QLinearConv, ...) compute in integers in every precision.
    #[arg(long, default_value = "f32", value_name = "f32|bf16|auto|int8")]
    pub precision: incept_compiler::Precision,
    /// With --precision auto: the largest output error bf16 may introduce, relative to each
    /// output's largest magnitude (default 1e-2). For `check`: the tolerance of the comparison
    /// (default 1e-4).
    #[arg(long, value_name = "T")]
    pub tolerance: Option<f64>,
    /// Let 3x3 convs use Winograd F(4x4, 3x3) where it is faster than F(2x2, 3x3): about 4-7%
    /// less latency on ResNet50 and InceptionV3 at one thread, for several times the rounding
    /// error (InceptionV3's output then differs from ONNX Runtime's by about 1e-4 of its scale).
    /// Off by default; `incept check` measures what it does to a model.
    #[arg(long = "winograd-f4")]
    pub winograd_f4: bool,
    /// Test-only: miscompile on purpose (epilogue-operand-as-bias, corrupt=NODE), to check that
    /// `incept check` and the tests catch it.
    #[arg(long = "inject-fault", hide = true, value_name = "FAULT")]
    pub fault: Option<Fault>,
}

impl BackendArgs {
    /// The options to compile the model file `model` with: symbolic dims that neither the flags
    /// nor the shapes of `inputs` bind are bound to 1, with a note (see `bind_open_dims`).
    pub fn options_for(
        &self,
        model: &std::path::Path,
        inputs: &[(Option<String>, incept_ir::Tensor)],
    ) -> Result<CompileOptions> {
        let mut options = self.options()?;
        options.import = crate::cli::shapes::options_for_file(model, &options.import, inputs);
        Ok(options)
    }

    /// The options as the flags give them.
    pub fn options(&self) -> Result<CompileOptions> {
        self.options_checking(false)
    }

    /// The options; `check` has a `--tolerance` of its own use, every other command only with
    /// `--precision auto`.
    pub fn options_checking(&self, checking: bool) -> Result<CompileOptions> {
        if self.tolerance.is_some() && !checking && self.precision != incept_compiler::Precision::Auto {
            anyhow::bail!("--tolerance is the bound of --precision auto; give --precision auto with it");
        }
        Ok(CompileOptions {
            import: self.shapes.import_options()?,
            outputs: self.cut.outputs.clone(),
            pipeline: Pipeline::from_level(self.level),
            disabled_passes: self.disable.clone(),
            passes: PassOptions::default(),
            threads: self.threads,
            cpu: self.cpu,
            fault: self.fault.clone(),
            im2col_band_bytes: None,
            winograd_tile: None,
            winograd_f4: self.winograd_f4,
            precision: self.precision,
            implicit_min_fill: None,
            int8_planes: None,
            auto_tolerance: self.tolerance.unwrap_or(1e-2),
            auto_inputs: vec![],
            f32_nodes: vec![],
        })
    }
}

/// Compile a model to vectorised machine code (Cranelift) and report the time per stage
/// (import, passes, lowering, memory plan, codegen), the code size and the arena size next to its
/// lower bound; with -o, write the compiled model as an `.incept` artifact that `incept run`,
/// `bench` and applications linking only incept-runtime (`Model::load`) load without compiling.
/// An artifact is native code for this architecture and the CPU features of its tier (--cpu).
#[derive(Args)]
pub struct CompileArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Write the compiled model to this `.incept` file.
    #[arg(short = 'o', long = "output", value_name = "FILE.incept")]
    output: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
    /// Print the time of every stage.
    #[arg(long)]
    timings: bool,
    /// Sign the artifact with this secret key (from `incept keygen`), so that loaders that
    /// trust its public key accept it (`run --trust KEY.pub`, `LoadOptions::trusted_keys`).
    #[arg(long, value_name = "KEY", requires = "output")]
    sign: Option<PathBuf>,
}

pub fn summary(r: &CompileReport, timings: bool) -> String {
    let total: f64 = r.stages.iter().map(|(_, d)| d.as_secs_f64()).sum();
    let mut s = format!(
        "compiled in {:.3} s: {} kernels, {} steps, {} bytes of code, {} bytes of weights\narena {} bytes (lower bound {}, ratio {:.3})\n",
        total,
        r.kernels,
        r.steps,
        r.code_bytes,
        r.weight_bytes,
        r.arena_bytes,
        r.arena_lower_bound,
        if r.arena_lower_bound > 0 { r.arena_bytes as f64 / r.arena_lower_bound as f64 } else { 1.0 }
    );
    if timings {
        for (name, d) in &r.stages {
            s.push_str(&format!("  {name:<12} {:>9.1} ms\n", d.as_secs_f64() * 1e3));
        }
    }
    s
}

/// A compile error in the words of the command line: "cannot compile 'MODEL'", unless the error
/// names the file already (it could not be read).
pub fn compile_error(e: incept_compiler::compile::CompileError, model: &std::path::Path) -> anyhow::Error {
    match e {
        incept_compiler::compile::CompileError::Import(incept_ir::Error::Io { .. }) => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(format!("cannot compile '{}'", model.display())),
    }
}

pub fn run(a: CompileArgs) -> Result<()> {
    let opts = a.backend.options_for(&a.model, &[])?;
    // Fail before compiling, not after, when the artifact cannot be written (or would replace
    // the model itself). A failed compile leaves whatever was at the output path.
    if let Some(p) = &a.output {
        crate::cli::check_output(p, &[("the model", &a.model)])?;
    }
    let key = match &a.sign {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("cannot read the signing key '{}'", p.display()))?;
            Some(incept_runtime::signature::SecretKey::from_text(&text).with_context(|| format!("'{}'", p.display()))?)
        }
        None => None,
    };
    let spinner = crate::cli::progress::Spinner::start(format!("compiling {}", a.model.display()));
    let compiled = incept_compiler::compile_plan_with_report(a.model.as_path(), &opts);
    drop(spinner);
    let (plan, report) = compiled.map_err(|e| compile_error(e, &a.model))?;
    let bytes = a.output.as_ref().map(|_| {
        let info = incept_compiler::artifact_info(&opts);
        incept_runtime::artifact::encode_signed(&plan, &info, key.as_ref())
    });
    // Loading checks the plan on this CPU; a plan for another CPU is still written.
    let loaded = incept_runtime::Model::new(plan, &incept_runtime::RunOptions { threads: opts.threads });
    out(&summary(&report, a.timings))?;
    if let Some(auto) = &report.auto {
        out(&incept_compiler::auto::describe(auto))?;
    }
    match &loaded {
        Ok(model) => out(&format!("threads: {}\n", model.threads()))?,
        Err(e @ incept_runtime::RunError::CpuFeatures { .. }) if a.output.is_some() => {
            eprintln!("note: this CPU cannot run the compiled model ({e}); the artifact is for a CPU that can")
        }
        Err(_) => {}
    }
    let _model = match (loaded, &a.output) {
        (Ok(m), _) => Some(m),
        (Err(incept_runtime::RunError::CpuFeatures { .. }), Some(_)) => None,
        (Err(e), _) => return Err(compile_error(e.into(), &a.model)),
    };
    if let (Some(path), Some(bytes)) = (&a.output, bytes) {
        crate::cli::write_file(path, &bytes)?;
        out(&format!("wrote {} ({} bytes)\n", path.display(), bytes.len()))?;
        if let Some(k) = &key {
            out(&format!("signed by {}\n", k.public()))?;
        }
    }
    Ok(())
}
