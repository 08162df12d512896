//! `incept run`: run a model on inputs from `.npy` files or an ONNX test data folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use incept_ir::{Tensor, interp, npy, onnx};

use crate::cli::optimize::{OptArgs, optimize};
use crate::cli::out;
use crate::cli::shapes::{CutArgs, ShapeArgs, load_model};

/// Run a model (compiled to machine code, or with --reference the interpreter) and write or
/// print its outputs.
///
/// Inputs come from `.npy` files (one per graph input, in order, or as NAME=FILE), or from an ONNX
/// test data folder holding input_0.pb, input_1.pb, ...; when that folder also holds
/// output_N.pb, the results are compared with them. Symbolic dims bind to the given data.
#[derive(Args)]
pub struct RunArgs {
    /// The ONNX model, or an `.incept` artifact from `incept compile -o` (then the compile
    /// options --cpu, --shape, --dim and the pass options do not apply).
    model: PathBuf,
    /// Run with the reference interpreter (plain loops, f64 accumulation): the definition of
    /// what each op means. Without it the model is compiled to machine code and run.
    #[arg(long)]
    reference: bool,
    /// Worker threads of the compiled model (0 = physical cores; 1 runs inline; at most four per
    /// logical CPU)
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,
    /// The CPU to compile for: native, baseline (f32x4, any x86-64), avx2, avxvnni, avx512, avx512bf16, avx512vnni or
    /// amx (see `incept compile --help`).
    #[arg(long, default_value = "native", value_name = "CPU")]
    cpu: incept_compiler::Cpu,
    /// The arithmetic of convs, Gemm and MatMul with constant weights: f32 (default), bf16 or auto
    /// (opt-in, see `incept compile --help`).
    #[arg(long, default_value = "f32", value_name = "f32|bf16|auto")]
    precision: incept_compiler::Precision,
    /// With --precision auto: the largest output error bf16 may introduce (default 1e-2),
    /// measured on the inputs given here.
    #[arg(long, value_name = "T")]
    tolerance: Option<f64>,
    /// An input: FILE.npy, NAME=FILE.npy, or a test data folder with input_N.pb (repeatable).
    #[arg(long = "input", short = 'i', value_name = "FILE|NAME=FILE|DIR")]
    inputs: Vec<String>,
    /// Where to write outputs as .npy: one path per output, or one existing folder that gets
    /// OUTPUT_NAME.npy files (checked for writing before anything runs). Without it, outputs are
    /// summarised on stdout.
    #[arg(long = "output", short = 'o', value_name = "PATH")]
    outputs: Vec<PathBuf>,
    #[command(flatten)]
    shapes: ShapeArgs,
    #[command(flatten)]
    cut: CutArgs,
    /// Optimisation passes apply before interpreting, so a numerical difference can be bisected
    /// pass by pass (-O0, --passes, --disable-pass).
    #[command(flatten)]
    opt: OptArgs,
    #[command(flatten)]
    trust: crate::cli::TrustArgs,
}

/// Tensors read from `--input` arguments, and expected outputs found beside them.
pub(crate) struct Loaded {
    pub inputs: Vec<(Option<String>, Tensor)>,
    /// The file each input came from, for errors that blame the data.
    pub sources: Vec<String>,
    pub expected: Vec<Tensor>,
}

/// The tensors of `prefix_0.pb`, `prefix_1.pb`, ... in `dir`: (file, name, value).
fn read_pb_dir(dir: &Path, prefix: &str) -> Result<Vec<(String, String, Tensor)>> {
    let mut out = vec![];
    for i in 0.. {
        let p = dir.join(format!("{prefix}_{i}.pb"));
        if !p.exists() {
            break;
        }
        let (name, t) = onnx::read_tensor_file(&p).with_context(|| format!("cannot read '{}'", p.display()))?;
        out.push((p.display().to_string(), name, t));
    }
    Ok(out)
}

/// The path an `--input` argument names (FILE, NAME=FILE or DIR).
fn input_path(arg: &str) -> PathBuf {
    match arg.split_once('=') {
        Some((_, p)) if !Path::new(arg).exists() => PathBuf::from(p),
        _ => PathBuf::from(arg),
    }
}

/// Every file the command reads: the model, and each input (a test data folder's `.pb` files).
fn read_paths(a: &RunArgs) -> Vec<(&'static str, PathBuf)> {
    let mut reads = vec![("the model", a.model.clone())];
    for path in a.inputs.iter().map(|arg| input_path(arg)) {
        match std::fs::read_dir(&path) {
            Ok(entries) => reads.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "pb"))
                    .map(|p| ("the test data file", p)),
            ),
            Err(_) => reads.push(("the input", path)),
        }
    }
    reads
}

pub(crate) fn load_inputs(args: &[String]) -> Result<Loaded> {
    let mut loaded = Loaded { inputs: vec![], sources: vec![], expected: vec![] };
    for a in args {
        let path = input_path(a);
        let name = match a.split_once('=') {
            Some((n, _)) if !Path::new(a).exists() => Some(n.to_string()),
            _ => None,
        };
        if path.is_dir() {
            let ins = read_pb_dir(&path, "input")?;
            if ins.is_empty() {
                bail!("folder '{}' has no input_0.pb", path.display());
            }
            for (file, n, t) in ins {
                loaded.inputs.push(((!n.is_empty()).then_some(n), t));
                loaded.sources.push(file);
            }
            loaded.expected.extend(read_pb_dir(&path, "output")?.into_iter().map(|(_, _, t)| t));
        } else {
            let t = npy::read(&path)?;
            loaded.inputs.push((name, t));
            loaded.sources.push(path.display().to_string());
        }
    }
    Ok(loaded)
}

/// Largest absolute difference and the largest difference relative to the expected max |value|.
pub fn compare(got: &Tensor, want: &Tensor) -> Result<(f64, f64)> {
    if got.shape() != want.shape() {
        bail!("shape {:?} differs from the expected {:?}", got.shape(), want.shape());
    }
    let (g, w) = (got.to_f64s()?, want.to_f64s()?);
    let scale = w.iter().fold(0f64, |m, v| m.max(v.abs()));
    let max_abs = g.iter().zip(&w).fold(0f64, |m, (a, b)| {
        if a.is_nan() != b.is_nan() {
            f64::INFINITY
        } else if a.is_nan() {
            m
        } else {
            m.max((a - b).abs())
        }
    });
    Ok((max_abs, if scale > 0.0 { max_abs / scale } else { max_abs }))
}

fn summary(t: &Tensor) -> String {
    let Ok(v) = t.to_f64s() else { return format!("{} values", t.numel()) };
    let shown: Vec<String> = v.iter().take(8).map(|x| format!("{x:.6}")).collect();
    let mut s = format!("[{}{}]", shown.join(", "), if v.len() > 8 { ", ..." } else { "" });
    if v.len() > 1 {
        let (min, max) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        s.push_str(&format!("  min {min:.6} max {max:.6} mean {mean:.6}"));
    }
    // A row of class scores: show the best classes.
    let rows = t.shape().iter().rev().skip(1).product::<usize>();
    if rows == 1 && v.len() > 1 && v.len() <= 100_000 {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
        let top: Vec<String> = idx.iter().take(5).map(|&i| format!("{i}: {:.6}", v[i])).collect();
        s.push_str(&format!("\n    top-5: {}", top.join(", ")));
    }
    s
}

/// Runs an `.incept` artifact: inputs bound by name (NAME=FILE) or in order.
fn run_artifact(a: &RunArgs, loaded: Loaded) -> Result<(Vec<String>, Vec<Tensor>)> {
    if a.reference {
        bail!(
            "'{}' is a compiled artifact (machine code, no graph): --reference needs the ONNX model",
            a.model.display()
        );
    }
    a.cut.refuse_for_artifact(&a.model)?;
    let start = Instant::now();
    let model = crate::cli::load_artifact(&a.model, a.threads, &a.trust.load_options(&a.model)?)?;
    let loaded_in = start.elapsed();
    let specs = &model.plan().inputs;
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    if loaded.inputs.len() != specs.len() {
        bail!("the artifact takes {} input(s) ({}), {} given", specs.len(), names.join(", "), loaded.inputs.len());
    }
    let mut ordered: Vec<Option<Tensor>> = vec![None; specs.len()];
    for (k, (name, t)) in loaded.inputs.into_iter().enumerate() {
        let slot = match name {
            Some(n) => names
                .iter()
                .position(|&x| x == n)
                .with_context(|| format!("the artifact has no input '{n}' (inputs: {})", names.join(", ")))?,
            None => k,
        };
        crate::cli::check_input_file(&loaded.sources[k], &t, &specs[slot], &a.model)?;
        if ordered[slot].replace(t).is_some() {
            bail!("input '{}' given twice", names[slot]);
        }
    }
    let rt: Vec<incept_runtime::Tensor> =
        ordered.iter().flatten().map(incept_compiler::to_runtime).collect::<Result<_, _>>()?;
    let start = Instant::now();
    let outs = model.run(&rt)?;
    eprintln!(
        "loaded in {:.1} ms, ran in {:.1} ms ({} threads)",
        loaded_in.as_secs_f64() * 1e3,
        start.elapsed().as_secs_f64() * 1e3,
        model.threads()
    );
    let outs = outs.iter().map(incept_compiler::from_runtime).collect::<Result<_, _>>()?;
    Ok((model.plan().outputs.iter().map(|o| o.name.clone()).collect(), outs))
}

pub fn run(a: RunArgs) -> Result<()> {
    // A key for an ONNX model, or one that cannot be read, is an error before anything runs.
    a.trust.load_options(&a.model)?;
    // Fail now, not after a run that may take minutes, when an output cannot be written or
    // would replace a file the command reads (outputs into a folder are checked by name once the
    // model's output names are known, still before anything is written).
    let reads = read_paths(&a);
    let reads: Vec<(&str, &Path)> = reads.iter().map(|(w, p)| (*w, p.as_path())).collect();
    match a.outputs.as_slice() {
        [dir] if dir.is_dir() => {}
        paths => paths.iter().try_for_each(|p| crate::cli::check_output(p, &reads))?,
    }
    let loaded = load_inputs(&a.inputs)?;
    if crate::cli::is_artifact(&a.model) {
        let expected = loaded.expected.clone();
        let (names, outs) = run_artifact(&a, loaded)?;
        return write_outputs(&a, &names, &outs, &expected);
    }
    let mut g = load_model(&a.model, &a.shapes, &loaded.inputs, &loaded.sources, true)?;
    a.cut.apply(&mut g)?;
    let opt = optimize(&mut g, &a.opt.manager(a.precision)?, &a.opt)?;
    if a.opt.factorize_report || opt.report.factorizations.iter().any(|r| r.approximate && r.applied) {
        eprint!("{}", opt.summary);
    }
    let inputs = interp::bind_inputs(&g, loaded.inputs)?;
    let outs = if a.reference {
        let spinner = crate::cli::progress::Spinner::start("running the reference interpreter");
        let start = Instant::now();
        let outs = interp::run(&g, &inputs)?;
        drop(spinner);
        eprintln!("reference interpreter: {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
        outs
    } else {
        if a.tolerance.is_some() && a.precision != incept_compiler::Precision::Auto {
            anyhow::bail!("--tolerance is the bound of --precision auto; give --precision auto with it");
        }
        // The graph is already optimised: compile it as it is.
        let options = incept_compiler::CompileOptions {
            pipeline: incept_compiler::passes::Pipeline::None,
            threads: a.threads,
            cpu: a.cpu,
            precision: a.precision,
            auto_tolerance: a.tolerance.unwrap_or(1e-2),
            auto_inputs: inputs.clone(),
            ..Default::default()
        };
        let spinner = crate::cli::progress::Spinner::start("compiling");
        let start = Instant::now();
        let (model, report) = incept_compiler::compile_graph(g.clone(), &options)
            .with_context(|| format!("cannot compile '{}'", a.model.display()))?;
        if let Some(auto) = &report.auto {
            eprint!("{}", incept_compiler::auto::describe(auto));
        }
        let compiled = start.elapsed();
        drop(spinner);
        let rt: Vec<incept_runtime::Tensor> =
            inputs.iter().map(incept_compiler::to_runtime).collect::<Result<_, _>>()?;
        let start = Instant::now();
        let outs = model.run(&rt)?;
        eprintln!(
            "compiled in {:.1} ms, ran in {:.1} ms ({} threads)",
            compiled.as_secs_f64() * 1e3,
            start.elapsed().as_secs_f64() * 1e3,
            model.threads()
        );
        outs.iter().map(incept_compiler::from_runtime).collect::<Result<_, _>>()?
    };
    let names: Vec<String> = g.outputs().iter().map(|&v| g.value(v).name.clone()).collect();
    write_outputs(&a, &names, &outs, &loaded.expected)
}

/// Compares the outputs with expected ones (from a test data folder), then writes or prints them.
fn write_outputs(a: &RunArgs, names: &[String], outs: &[Tensor], expected: &[Tensor]) -> Result<()> {
    if !expected.is_empty() {
        if expected.len() != outs.len() {
            bail!("the test data has {} outputs, the model {}", expected.len(), outs.len());
        }
        for ((name, got), want) in names.iter().zip(outs).zip(expected) {
            let (abs, rel) = compare(got, want).with_context(|| format!("output '{name}'"))?;
            out(&format!("{name}: max abs diff {abs:.3e}, relative {rel:.3e} vs the expected output\n"))?;
        }
    }
    let targets: Vec<PathBuf> = match a.outputs.as_slice() {
        [] => {
            for (name, t) in names.iter().zip(outs) {
                out(&format!("{name} {}{:?}: {}\n", t.dtype(), t.shape(), summary(t)))?;
            }
            return Ok(());
        }
        [dir] if dir.is_dir() => names
            .iter()
            .map(|name| {
                let file: String = name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' })
                    .collect();
                dir.join(format!("{file}.npy"))
            })
            .collect(),
        paths => {
            if paths.len() != outs.len() {
                bail!("{} output path(s) given for {} model output(s) ({})", paths.len(), outs.len(), names.join(", "));
            }
            paths.to_vec()
        }
    };
    // Every target is checked before the first is written.
    let reads = read_paths(a);
    let reads: Vec<(&str, &Path)> = reads.iter().map(|(w, p)| (*w, p.as_path())).collect();
    for (k, p) in targets.iter().enumerate() {
        if targets[..k].iter().any(|q| q == p) {
            bail!("two outputs would be written to '{}'", p.display());
        }
        crate::cli::check_output(p, &reads)?;
    }
    for (p, t) in targets.iter().zip(outs) {
        npy::write(p, t)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
