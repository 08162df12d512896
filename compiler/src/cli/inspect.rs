//! `incept inspect`: print a model's IR, statistics or a Graphviz picture.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use incept_compiler::table::{NAME_WIDTH, shorten};
use incept_ir::stats::Stats;
use incept_ir::text;

use crate::cli::optimize::{OptArgs, human, optimize};
use crate::cli::out;
use crate::cli::shapes::{CutArgs, ShapeArgs, load_model};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// The IR text form (parses back with the same printer).
    Text,
    /// Graphviz DOT (`incept inspect m.onnx --format dot | dot -Tsvg > m.svg`).
    Dot,
}

/// Print a model in incept's IR text form, its statistics, or a DOT graph, after optimisation.
///
/// The IR shows every value with its dtype and shape, ops with their attributes in canonical form
/// (defaults made explicit, auto_pad resolved), and large constants as a short content hash. The
/// per-pass summary follows as `;` comment lines: pass, times applied, op nodes and MACs of the
/// graph the pass first ran on and after its own changes (so each row is that pass's own
/// effect), milliseconds, and a last row for all passes together, from the imported graph to the
/// optimised one. Use -O0 to see the graph as imported.
#[derive(Args)]
pub struct InspectArgs {
    /// The ONNX model, or an `.incept` artifact (then: its header, inputs and outputs, sizes,
    /// kernels and steps).
    model: PathBuf,
    /// Print statistics instead of the IR: op histogram, parameter count, MACs per op kind and in
    /// total, the largest activation.
    #[arg(long)]
    stats: bool,
    /// Print the memory plan instead of the IR: every intermediate buffer of the compiled model
    /// with its arena offset, size and the steps it lives across (and which buffer it reuses in
    /// place), then the arena size next to its lower bound (the most bytes alive at once).
    #[arg(long, conflicts_with = "stats")]
    memory: bool,
    /// Print the compiled plan instead of the IR: every step (one kernel call) in execution order
    /// with its node, what it computes, its kernel, the instruction set of its inner loop (tier:
    /// avx2/avx512 for the assembler microkernels, f32x4 for Cranelift code), its tile count
    /// (the unit of parallel work), its FLOPs and the node's input and output types. The model is
    /// lowered, not compiled or run: `bench --profile` measures the same steps.
    #[arg(long, conflicts_with_all = ["stats", "memory"])]
    kernels: bool,
    /// With --kernels: the CPU to plan for (native, baseline, avx2, avxvnni, avx512, avx512bf16, avx512vnni or amx, as
    /// for `compile`).
    #[arg(long, default_value = "native", value_name = "CPU", requires = "kernels")]
    cpu: incept_compiler::Cpu,
    /// The precision to plan for (f32, bf16, auto or int8, as for `compile`; int8 also fuses a QDQ
    /// model's groups into integer ops in the printed graph, with their scales and zero points as
    /// the constants they read, and in --stats and --kernels).
    #[arg(long, default_value = "f32", value_name = "f32|bf16|auto|int8")]
    precision: incept_compiler::Precision,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten)]
    shapes: ShapeArgs,
    #[command(flatten)]
    cut: CutArgs,
    #[command(flatten)]
    opt: OptArgs,
    /// Print the IR after this pass (or `all`) whenever it changes the graph (repeatable). An
    /// unknown name is an error; a pass that never changed the graph, or is not in the pipeline,
    /// is reported as such.
    #[arg(long = "print-after", value_name = "PASS|all")]
    print_after: Vec<String>,
    /// Print what each pass changed, as a unified diff of the IR.
    #[arg(long)]
    diff: bool,
}

/// What an artifact holds: its header's facts, inputs and outputs, sizes, kernels and steps.
fn inspect_artifact(path: &std::path::Path) -> Result<()> {
    use anyhow::Context;
    let (plan, info) = incept_runtime::artifact::load(path)
        .with_context(|| format!("cannot load the artifact '{}'", path.display()))?;
    let io = |list: &[incept_runtime::IoSpec]| {
        list.iter()
            .map(|s| {
                let dims: Vec<String> = s.shape.iter().map(|d| d.to_string()).collect();
                format!("  {} : {}[{}]\n", s.name, s.dtype, dims.join(","))
            })
            .collect::<String>()
    };
    let mut s = format!(
        "artifact: {}\nformat: {}.{} (this runtime reads up to it)\nwritten by: {}\ncodegen: {}\narchitecture: {}; CPU features: {}\n",
        path.display(),
        incept_runtime::artifact::FORMAT_MAJOR,
        incept_runtime::artifact::FORMAT_MINOR,
        info.compiler,
        info.codegen.replace('\n', "; "),
        std::env::consts::ARCH,
        plan.features.join(", ")
    );
    s.push_str(&match &info.signed_by {
        Some(k) => format!("signed by: {k} (signature valid)\n"),
        None => "signature: none\n".to_string(),
    });
    s.push_str(&format!("inputs:\n{}outputs:\n{}", io(&plan.inputs), io(&plan.outputs)));
    s.push_str(&format!(
        "code {} bytes in {} kernels; weights {} bytes; arena {} bytes; {} steps\n",
        plan.code.len(),
        plan.kernels.len(),
        plan.weights.len(),
        plan.arena_size,
        plan.steps.len()
    ));
    s.push_str("kernels:\n");
    for (i, k) in plan.kernels.iter().enumerate() {
        s.push_str(&format!("  #{i:<4} {:>7} bytes  {}\n", k.len, k.name));
    }
    s.push_str("steps:\n");
    for st in &plan.steps {
        s.push_str(&format!(
            "  {:<48} {:<16} kernel #{:<4} {:>6} tiles\n",
            shorten(&st.name, NAME_WIDTH),
            st.op,
            st.kernel,
            st.tiles
        ));
    }
    out(&s)
}

pub fn run(a: InspectArgs) -> Result<()> {
    if crate::cli::is_artifact(&a.model) {
        a.cut.refuse_for_artifact(&a.model)?;
        return inspect_artifact(&a.model);
    }
    // The plan views need static shapes; the IR and statistics show symbolic dims as they are.
    let mut g = load_model(&a.model, &a.shapes, &[], &[], a.kernels || a.memory)?;
    a.cut.apply(&mut g)?;
    incept_ir::verify::verify(&g)?;
    let mut pm = a.opt.manager(a.precision)?;
    let known: Vec<&str> = incept_compiler::passes::all_passes().iter().map(|p| p.name()).collect();
    for p in a.print_after.iter().filter(|p| *p != "all") {
        if !known.contains(&p.as_str()) {
            bail!("--print-after: unknown pass '{p}' (passes: {}, or all)", known.join(", "));
        }
    }
    pm.print_after = a.print_after.clone();
    pm.diff = a.diff;
    let opt = optimize(&mut g, &pm, &a.opt)?;
    // Printing nothing for a pass that never fired would look like a broken flag.
    let pipeline = pm.pass_names();
    for p in a.print_after.iter().filter(|p| *p != "all") {
        if !pipeline.contains(&p.as_str()) {
            out(&format!(
                "; --print-after {p}: the pass is not in this pipeline (see -O, --passes, --disable-pass)\n"
            ))?;
        } else if !opt.report.snapshots.iter().any(|s| s.pass == p) {
            out(&format!(
                "; --print-after {p}: the pass never changed the graph, so there is no IR to print after it\n"
            ))?;
        }
    }
    for snap in &opt.report.snapshots {
        match &snap.before {
            Some(before) => {
                let diff = similar::TextDiff::from_lines(before.as_str(), snap.text.as_str());
                let text = diff
                    .unified_diff()
                    .context_radius(2)
                    .header(&format!("before {}", snap.pass), &format!("after {}", snap.pass))
                    .to_string();
                out(&text)?;
            }
            None => out(&format!("; IR after {}\n{}", snap.pass, snap.text))?,
        }
    }
    let summary = opt.summary;
    if a.memory {
        return out(&memory_table(&g)?);
    }
    if a.kernels {
        return out(&kernel_table(&g, a.cpu, a.precision)?);
    }
    if a.stats {
        let mut s = format!("model: {}\n", a.model.display());
        for v in g.input_values() {
            s.push_str(&format!("input: {} {}\n", g.value(v).name, incept_ir::format::format_type(g.ty(v))));
        }
        for &v in g.outputs() {
            s.push_str(&format!("output: {} {}\n", g.value(v).name, incept_ir::format::format_type(g.ty(v))));
        }
        s.push_str(&Stats::of(&g).to_string());
        s.push_str(&summary);
        return out(&s);
    }
    match a.format {
        Format::Text => out(&(text::print(&g)? + &summary)),
        Format::Dot => out(&text::dot::to_dot(&g)?),
    }
}

/// The plan's steps, one row each, then their totals.
fn kernel_table(
    g: &incept_ir::Graph,
    cpu: incept_compiler::Cpu,
    precision: incept_compiler::Precision,
) -> Result<String> {
    if precision == incept_compiler::Precision::Auto {
        anyhow::bail!(
            "--precision auto chooses by running the model; `incept compile MODEL --precision auto` prints its choice"
        );
    }
    let options = incept_compiler::CompileOptions { cpu, precision, ..Default::default() };
    let (steps, kernels) = incept_compiler::plan_steps(g, &options)?;
    let mut s = format!(
        "{:>4}  {:<48} {:<18} {:<36} {:<6} {:>6} {:>8}  shapes\n",
        "step", "node", "op", "kernel", "tier", "tiles", "FLOPs"
    );
    for (i, st) in steps.iter().enumerate() {
        let shapes = if st.outputs.is_empty() {
            String::new()
        } else {
            format!("{} -> {}", st.inputs.join(", "), st.outputs.join(", "))
        };
        let flops = if st.flops > 0 { human(st.flops) } else { "-".into() };
        s.push_str(&format!(
            "{i:>4}  {:<48} {:<18} {:<36} {:<6} {:>6} {flops:>8}  {shapes}\n",
            shorten(&st.node, NAME_WIDTH),
            st.op,
            st.kernel,
            st.tier,
            st.tiles
        ));
    }
    let flops: u64 = steps.iter().map(|st| st.flops).sum();
    let bf16_flops: u64 = steps.iter().filter(|st| st.bf16).map(|st| st.flops).sum();
    s.push_str(&format!(
        "{} steps, {kernels} distinct kernels, {} FLOPs per run; planned for --cpu {} (tier {}){}\n",
        steps.len(),
        human(flops),
        cpu.name(),
        cpu.tier().name(),
        match options.bf16_tier()? {
            Some(t) => format!(", precision bf16 ({}: {} of {} FLOPs)", t.name(), human(bf16_flops), human(flops)),
            None => String::new(),
        }
    ));
    Ok(s)
}

fn memory_table(g: &incept_ir::Graph) -> Result<String> {
    let (plan, steps, weights) = incept_compiler::plan_memory(g)?;
    let mut s = format!("{:>12} {:>12}  {:<11} buffer\n", "offset", "bytes", "steps");
    for p in &plan.placements {
        let shares =
            p.shares.as_ref().map(|r| format!("  (in place of {})", shorten(r, NAME_WIDTH))).unwrap_or_default();
        s.push_str(&format!(
            "{:>12} {:>12}  {:<11} {}{shares}\n",
            p.offset,
            p.bytes,
            format!("{}..{}", p.steps.0, p.steps.1),
            shorten(&p.name, NAME_WIDTH)
        ));
    }
    let ratio = plan.size as f64 / plan.lower_bound.max(1) as f64;
    s.push_str(&format!(
        "arena {} bytes, lower bound {} bytes (ratio {ratio:.3}); {} steps; weights {} bytes\n",
        plan.size,
        plan.lower_bound,
        steps.len(),
        weights
    ));
    Ok(s)
}
