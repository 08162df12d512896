//! `incept bench`: latency of a compiled model.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use incept_compiler::compile_with_report;
use incept_compiler::table::{NAME_WIDTH, shorten};
use incept_runtime::{DType, Tensor};

use crate::cli::compile::BackendArgs;
use crate::cli::out;

/// Measure a compiled model: warm-up runs, then latency (min, median, p90) and throughput over
/// `--iters` runs on a seeded random input (or the given .npy inputs). Throughput is in images/s:
/// runs/s times the batch size, the leading dimension of the first input.
#[derive(Args)]
pub struct BenchArgs {
    /// The ONNX model, or an `.incept` artifact from `incept compile -o` (then it is loaded, not
    /// compiled, and --threads is the only backend option that applies).
    model: PathBuf,
    #[command(flatten)]
    backend: BackendArgs,
    /// Timed runs.
    #[arg(long, default_value_t = 50)]
    iters: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Inputs as .npy files, in order (default: seeded uniform [-1, 1) of the model's shapes).
    #[arg(long = "input", short = 'i')]
    inputs: Vec<PathBuf>,
    /// Time every kernel call and print the most expensive steps (see --top) with their kernels,
    /// GFLOP/s for convs and matrix products, and the time per op family. With --json, the
    /// object gets a "profile" with every step (in plan order, full names) and every op family.
    #[arg(long)]
    profile: bool,
    /// How many of the slowest steps --profile lists
    #[arg(long, default_value_t = 20, requires = "profile")]
    top: usize,
    /// Print one JSON object instead of text: median_ms, min_ms, p90_ms, samples_ms, threads,
    /// iters, throughput_per_s (runs), batch and images_per_s, compile_s, and with --profile a
    /// "profile" object ({"steps": [{step, node, op, kernel, ms, share, tiles, flops, gflops}],
    /// "by_op": [{op, ms, share}]}).
    #[arg(long)]
    json: bool,
    /// After the timed runs, trace one more run and write it as a Chrome trace-event file (open
    /// it in Perfetto or chrome://tracing): one track per worker thread, one slice per chunk of
    /// a step's tiles, with its kernel, node, tiles and GFLOP/s.
    #[arg(long, value_name = "FILE.json")]
    trace: Option<PathBuf>,
    #[command(flatten)]
    trust: crate::cli::TrustArgs,
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One traced run as Chrome trace events (the JSON array format with metadata).
fn trace_json(model: &incept_runtime::Model, events: &[incept_runtime::TraceEvent]) -> String {
    let plan = model.plan();
    let mut threads: Vec<usize> = events.iter().map(|e| e.thread).collect();
    threads.sort_unstable();
    threads.dedup();
    let mut items: Vec<String> = threads
        .iter()
        .map(|t| {
            format!("{{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": 1, \"tid\": {t}, \"args\": {{\"name\": \"worker {t}\"}}}}")
        })
        .collect();
    for e in events {
        let step = &plan.steps[e.step];
        let kernel = plan.kernels.get(step.kernel).map_or("?", |k| k.name.as_str());
        let us = e.duration.as_secs_f64() * 1e6;
        let share = (e.tiles.1 - e.tiles.0) as f64 / step.tiles.max(1) as f64;
        let gflops = if step.flops > 0 && us > 0.0 { step.flops as f64 * share / (us * 1e3) } else { 0.0 };
        items.push(format!(
            "{{\"name\": {}, \"cat\": {}, \"ph\": \"X\", \"pid\": 1, \"tid\": {}, \"ts\": {:.3}, \"dur\": {:.3}, \"args\": {{\"node\": {}, \"step\": {}, \"tiles\": \"{}..{} of {}\", \"gflops\": {:.2}}}}}",
            json_str(kernel),
            json_str(&step.op),
            e.thread,
            e.start.as_secs_f64() * 1e6,
            us,
            json_str(&step.name),
            e.step,
            e.tiles.0,
            e.tiles.1,
            step.tiles,
            gflops
        ));
    }
    format!("{{\"traceEvents\": [\n{}\n], \"displayTimeUnit\": \"ms\"}}\n", items.join(",\n"))
}

fn random_input(shape: &[usize], dtype: DType, seed: u64) -> Result<Tensor> {
    if dtype != DType::F32 {
        bail!("bench makes random inputs for f32 only; give --input for {dtype}");
    }
    let mut rng = incept_ir::text::parse::SplitMix(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.uniform() as f32).collect();
    Tensor::from_f32(shape, &v).context("input")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn run(a: BenchArgs) -> Result<()> {
    anyhow::ensure!(a.iters > 0, "--iters must be at least 1");
    // A key for an ONNX model, or one that cannot be read, is an error before anything runs.
    a.trust.load_options(&a.model)?;
    // Fail before the runs, not after them, when the trace cannot be written (or would replace
    // a file the command reads).
    if let Some(p) = &a.trace {
        let mut reads: Vec<(&str, &std::path::Path)> = vec![("the model", &a.model)];
        reads.extend(a.inputs.iter().map(|i| ("the input", i.as_path())));
        crate::cli::check_output(p, &reads)?;
    }
    let files: Vec<(Option<String>, incept_ir::Tensor)> =
        a.inputs.iter().map(|p| Ok((None, incept_ir::npy::read(p)?))).collect::<Result<_>>()?;
    let t0 = Instant::now();
    let (model, report) = if crate::cli::is_artifact(&a.model) {
        a.backend.cut.refuse_for_artifact(&a.model)?;
        (crate::cli::load_artifact(&a.model, a.backend.threads, &a.trust.load_options(&a.model)?)?, None)
    } else {
        // Symbolic dims bind to the given inputs' shapes, or to 1.
        let opts = a.backend.options_for(&a.model, &files)?;
        let spinner = crate::cli::progress::Spinner::start(format!("compiling {}", a.model.display()));
        let (m, r) = compile_with_report(a.model.as_path(), &opts)
            .map_err(|e| crate::cli::compile::compile_error(e, &a.model))?;
        drop(spinner);
        (m, Some(r))
    };
    // For an artifact, the time to load it.
    let compile_s = t0.elapsed().as_secs_f64();
    let inputs: Vec<Tensor> = if a.inputs.is_empty() {
        model
            .plan()
            .inputs
            .iter()
            .enumerate()
            .map(|(k, s)| random_input(&s.shape, s.dtype, 1 + k as u64))
            .collect::<Result<_>>()?
    } else {
        let specs = &model.plan().inputs;
        if files.len() != specs.len() {
            bail!("the model takes {} input(s), {} given", specs.len(), files.len());
        }
        files
            .iter()
            .zip(&a.inputs)
            .zip(specs)
            .map(|(((_, t), path), spec)| {
                crate::cli::check_input_file(&path.display().to_string(), t, spec, &a.model)?;
                incept_compiler::to_runtime(t).map_err(anyhow::Error::from)
            })
            .collect::<Result<_>>()?
    };
    for _ in 0..a.warmup {
        model.run(&inputs)?;
    }
    let mut times = Vec::with_capacity(a.iters);
    let mut per_step = vec![0f64; model.plan().steps.len()];
    let show_progress = !a.json && a.iters >= 20;
    for i in 0..a.iters {
        let t = Instant::now();
        if a.profile {
            let (_, timings) = model.run_timed(&inputs)?;
            for st in timings {
                per_step[st.step] += st.time.as_secs_f64();
            }
        } else {
            model.run(&inputs)?;
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if show_progress && (i + 1) % (a.iters / 20).max(1) == 0 {
            eprint!("\r[{:<20}] {}/{}", "#".repeat((i + 1) * 20 / a.iters), i + 1, a.iters);
            let _ = std::io::stderr().flush();
        }
    }
    if show_progress {
        eprintln!();
    }
    if let Some(path) = &a.trace {
        let (_, events) = model.run_traced(&inputs)?;
        crate::cli::write_file(path, trace_json(&model, &events).as_bytes())?;
        if !a.json {
            eprintln!("wrote {} ({} slices of one run)", path.display(), events.len());
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let (min, median, p90) = (sorted[0], percentile(&sorted, 0.5), percentile(&sorted, 0.9));
    let runs_per_s = 1e3 / median;
    // A run computes a whole batch: its size is the leading dimension of the first input.
    let batch = model.plan().inputs.first().and_then(|i| i.shape.first()).copied().unwrap_or(1);
    let images_per_s = runs_per_s * batch as f64;
    let profile = a.profile.then(|| Profile::of(model.plan(), &per_step, a.iters));
    if a.json {
        let profile_json = profile.as_ref().map(|p| format!(", \"profile\": {}", p.json())).unwrap_or_default();
        out(&format!(
            "{{\"model\": {}, \"threads\": {}, \"iters\": {}, \"min_ms\": {:.4}, \"median_ms\": {:.4}, \"p90_ms\": {:.4}, \"throughput_per_s\": {:.3}, \"batch\": {batch}, \"images_per_s\": {:.3}, \"compile_s\": {:.4}, \"samples_ms\": [{}]{profile_json}}}\n",
            json_str(&a.model.display().to_string()),
            model.threads(),
            a.iters,
            min,
            median,
            p90,
            runs_per_s,
            images_per_s,
            compile_s,
            times.iter().map(|t| format!("{t:.4}")).collect::<Vec<_>>().join(", ")
        ))?;
        return Ok(());
    }
    let mut s = format!(
        "{}: {} threads, {} runs after {} warm-up\nlatency min {:.3} ms, median {:.3} ms, p90 {:.3} ms; throughput {:.2} images/s ({:.2} runs/s of batch {batch})\n",
        a.model.display(),
        model.threads(),
        a.iters,
        a.warmup,
        min,
        median,
        p90,
        images_per_s,
        runs_per_s
    );
    match &report {
        Some(r) => s.push_str(&crate::cli::compile::summary(r, false)),
        None => {
            let p = model.plan();
            s.push_str(&format!(
                "loaded in {:.1} ms: {} kernels, {} steps, {} bytes of code, {} bytes of weights, arena {} bytes\n",
                compile_s * 1e3,
                p.kernels.len(),
                p.steps.len(),
                p.code.len(),
                p.weights.len(),
                p.arena_size
            ));
        }
    }
    if let Some(p) = profile {
        s.push_str(&p.text(a.top));
    }
    out(&s)
}

/// One profiled step: where the time of a run went.
struct StepTime {
    step: usize,
    name: String,
    op: String,
    kernel: String,
    ms: f64,
    /// Of the time of all steps.
    share: f64,
    tiles: usize,
    flops: u64,
    gflops: Option<f64>,
}

/// `--profile`: time per step and per op family, averaged over the timed runs.
struct Profile {
    /// In plan order.
    steps: Vec<StepTime>,
    /// (op, ms per run, share), most expensive first.
    by_op: Vec<(String, f64, f64)>,
}

impl Profile {
    fn of(plan: &incept_runtime::Plan, per_step: &[f64], iters: usize) -> Profile {
        let total = per_step.iter().sum::<f64>().max(1e-12);
        let steps: Vec<StepTime> = plan
            .steps
            .iter()
            .zip(per_step)
            .enumerate()
            .map(|(i, (st, &t))| {
                let ms = t / iters as f64 * 1e3;
                StepTime {
                    step: i,
                    name: st.name.clone(),
                    op: st.op.clone(),
                    kernel: plan.kernels.get(st.kernel).map_or_else(|| "?".into(), |k| k.name.clone()),
                    ms,
                    share: t / total,
                    tiles: st.tiles,
                    flops: st.flops,
                    gflops: (st.flops > 0 && ms > 0.0).then(|| st.flops as f64 / (ms * 1e-3) / 1e9),
                }
            })
            .collect();
        let mut fam: std::collections::BTreeMap<&str, f64> = Default::default();
        for st in &steps {
            *fam.entry(st.op.as_str()).or_default() += st.ms;
        }
        let total_ms = steps.iter().map(|s| s.ms).sum::<f64>().max(1e-12);
        let mut by_op: Vec<(String, f64, f64)> =
            fam.into_iter().map(|(op, ms)| (op.to_string(), ms, ms / total_ms)).collect();
        by_op.sort_by(|a, b| b.1.total_cmp(&a.1));
        Profile { steps, by_op }
    }

    /// The `top` slowest steps, then the share of each op family.
    fn text(&self, top: usize) -> String {
        let mut s = format!("{:<48} {:<10} {:>9} {:>6} {:>9}  kernel\n", "step", "op", "ms/run", "share", "GFLOP/s");
        let mut order: Vec<&StepTime> = self.steps.iter().collect();
        order.sort_by(|x, y| y.ms.total_cmp(&x.ms));
        for st in order.into_iter().take(top) {
            let gflops = st.gflops.map_or_else(|| "-".into(), |g| format!("{g:.1}"));
            s.push_str(&format!(
                "{:<48} {:<10} {:>9.3} {:>5.1}% {gflops:>9}  {}\n",
                shorten(&st.name, NAME_WIDTH),
                st.op,
                st.ms,
                100.0 * st.share,
                st.kernel
            ));
        }
        s.push_str("by op:");
        for (op, _, share) in &self.by_op {
            s.push_str(&format!(" {op} {:.1}%", 100.0 * share));
        }
        s.push('\n');
        s
    }

    /// Every step in plan order with full names, and the op families.
    fn json(&self) -> String {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|st| {
                format!(
                    "{{\"step\": {}, \"node\": {}, \"op\": {}, \"kernel\": {}, \"ms\": {:.5}, \"share\": {:.5}, \"tiles\": {}, \"flops\": {}, \"gflops\": {}}}",
                    st.step,
                    json_str(&st.name),
                    json_str(&st.op),
                    json_str(&st.kernel),
                    st.ms,
                    st.share,
                    st.tiles,
                    st.flops,
                    st.gflops.map_or_else(|| "null".into(), |g| format!("{g:.3}"))
                )
            })
            .collect();
        let by_op: Vec<String> = self
            .by_op
            .iter()
            .map(|(op, ms, share)| format!("{{\"op\": {}, \"ms\": {ms:.5}, \"share\": {share:.5}}}", json_str(op)))
            .collect();
        format!("{{\"steps\": [{}], \"by_op\": [{}]}}", steps.join(", "), by_op.join(", "))
    }
}
