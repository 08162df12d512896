//! The optimisation options shared by `inspect` and `run`: -O levels, explicit pass lists,
//! disabled passes, approximate factorisation, and the pass summary.

use anyhow::Result;
use clap::Args;
use incept_compiler::passes::factorize;
use incept_compiler::passes::{PassManager, PassOptions, PassStats, Pipeline, RunReport};
use incept_ir::Graph;

#[derive(Args, Clone, Debug)]
pub struct OptArgs {
    /// Optimisation level: 0 = none (the imported graph), 1 = declutter (portable, exact
    /// rewrites), 2 = declutter + lowering rewrites (the default).
    #[arg(short = 'O', default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=2), value_name = "LEVEL")]
    pub level: u8,
    /// Run exactly these passes, in order, to a fixed point (comma-separated; see `incept passes`).
    #[arg(long, value_delimiter = ',', value_name = "A,B,C")]
    pub passes: Option<Vec<String>>,
    /// Leave a pass out of the pipeline (repeatable).
    #[arg(long = "disable-pass", value_name = "NAME")]
    pub disable: Vec<String>,
    /// APPROXIMATE: also factorise convs whose weights factor only within this relative
    /// (Frobenius) error, where that cuts MACs. Changes results; see --factorize-report.
    #[arg(long = "factorize-tolerance", value_name = "T")]
    pub factorize_tolerance: Option<f64>,
    /// Print every factorised (or, with a tolerance, considered) conv: form, rank, MACs, weight
    /// error, and the whole model's output error on a seeded random input.
    #[arg(long = "factorize-report")]
    pub factorize_report: bool,
}

impl OptArgs {
    /// The pass manager of these options; `precision` int8 turns on the QDQ fusion.
    pub fn manager(&self, precision: incept_compiler::Precision) -> Result<PassManager> {
        if let Some(t) = self.factorize_tolerance {
            anyhow::ensure!(t > 0.0 && t < 1.0, "--factorize-tolerance must be between 0 and 1, got {t}");
        }
        let pipeline = match &self.passes {
            Some(list) => Pipeline::Explicit(list.clone()),
            None => Pipeline::from_level(self.level),
        };
        let options = PassOptions {
            factorize_tolerance: self.factorize_tolerance,
            fuse_qdq: precision == incept_compiler::Precision::Int8,
        };
        Ok(PassManager::new(&pipeline, &self.disable, options)?)
    }
}

/// What optimising produced besides the graph: the report, and the summary text to print.
pub struct Optimized {
    pub report: RunReport,
    pub summary: String,
}

/// Runs the pipeline over `g`; builds the pass summary, with the factorisation report when any
/// conv was factorised or the user asked for it.
pub fn optimize(g: &mut Graph, pm: &PassManager, args: &OptArgs) -> Result<Optimized> {
    let original = (args.factorize_report || args.factorize_tolerance.is_some()).then(|| g.clone());
    let spinner = crate::cli::progress::Spinner::start(if args.factorize_tolerance.is_some() {
        "optimising (approximate factorisation measures every conv)"
    } else {
        "optimising"
    });
    let report = pm.run(g)?;
    let mut summary = if report.stats.is_empty() { String::new() } else { self::summary(&report.stats) };
    let approximated = report.factorizations.iter().any(|r| r.applied && r.approximate);
    if args.factorize_report || report.factorizations.iter().any(|r| r.applied) {
        spinner.set("measuring the factorised model's output error");
        let err = match (&original, approximated) {
            (Some(orig), true) => Some(factorize::output_error(orig, g, 7)?),
            _ => None,
        };
        summary.push_str(&factorize::report(&report.factorizations, err));
    }
    Ok(Optimized { report, summary })
}

/// A count with a k/M/G suffix (`2.57M`).
pub fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// The per-pass summary as IR comment lines (`; ...`), so the printed IR still parses. Each row
/// is one pass's own effect: nodes and MACs of the graph it first ran on, and after its own
/// changes; the last row adds them up, from the imported graph to the optimised one.
pub fn summary(stats: &[PassStats]) -> String {
    let mut s = format!("; {:<22} {:>7} {:>13} {:>17} {:>9}\n", "pass", "applied", "nodes", "MACs", "ms");
    let row = |s: &mut String, name: &str, applied: usize, nodes: (usize, usize), macs: (u64, u64), ms: f64| {
        s.push_str(&format!(
            "; {:<22} {:>7} {:>6} -> {:<5} {:>7} -> {:<7} {:>9.2}\n",
            name,
            applied,
            nodes.0,
            nodes.1,
            human(macs.0),
            human(macs.1),
            ms
        ));
    };
    for st in stats {
        row(&mut s, st.name, st.applied, (st.nodes_before, st.nodes_after), (st.macs_before, st.macs_after), st.millis);
    }
    if let Some(first) = stats.first() {
        // Every change is some pass's own, so the passes' effects add up to the pipeline's.
        let nodes =
            stats.iter().fold(first.nodes_before as i128, |n, st| n + st.nodes_after as i128 - st.nodes_before as i128);
        let macs =
            stats.iter().fold(first.macs_before as i128, |n, st| n + st.macs_after as i128 - st.macs_before as i128);
        let applied = stats.iter().map(|st| st.applied).sum();
        let ms = stats.iter().map(|st| st.millis).sum();
        let clamp_nodes = nodes.clamp(0, usize::MAX as i128) as usize;
        let clamp_macs = macs.clamp(0, u64::MAX as i128) as u64;
        row(&mut s, "(all passes)", applied, (first.nodes_before, clamp_nodes), (first.macs_before, clamp_macs), ms);
    }
    s
}
