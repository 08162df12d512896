//! The optimisation options shared by `inspect` and `run`: -O levels, explicit pass lists,
//! disabled passes, and the pass summary.

use anyhow::Result;
use clap::Args;
use incept_compiler::passes::{PassManager, PassOptions, PassStats, Pipeline, manager::Snapshot};
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
}

impl OptArgs {
    pub fn manager(&self) -> Result<PassManager> {
        let pipeline = match &self.passes {
            Some(list) => Pipeline::Explicit(list.clone()),
            None => Pipeline::from_level(self.level),
        };
        Ok(PassManager::new(&pipeline, &self.disable, PassOptions::default())?)
    }
}

/// Runs the pipeline over `g`.
pub fn optimize(g: &mut Graph, pm: &PassManager) -> Result<(Vec<PassStats>, Vec<Snapshot>)> {
    Ok(pm.run(g)?)
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// The per-pass summary as IR comment lines (`; ...`), so the printed IR still parses.
pub fn summary(stats: &[PassStats]) -> String {
    let mut s = format!("; {:<22} {:>7} {:>13} {:>17} {:>9}\n", "pass", "applied", "nodes", "MACs", "ms");
    for st in stats {
        s.push_str(&format!(
            "; {:<22} {:>7} {:>6} -> {:<5} {:>7} -> {:<7} {:>9.2}\n",
            st.name,
            st.applied,
            st.nodes_before,
            st.nodes_after,
            human(st.macs_before),
            human(st.macs_after),
            st.millis
        ));
    }
    s
}
