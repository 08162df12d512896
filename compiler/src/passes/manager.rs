//! The pass manager: pipelines, fixed points, verification and statistics.

use std::time::Instant;

use incept_ir::graph::Graph;
use incept_ir::ops::Op;
use incept_ir::stats::Stats;
use incept_ir::verify::verify;

use crate::passes::{Pass, PassContext, PassError, PassOptions, all_passes, declutter_names, lower_names};

/// Which passes run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pipeline {
    /// -O0: none.
    None,
    /// -O1: declutter (portable, exact).
    Declutter,
    /// -O2: declutter, then lowering rewrites.
    Full,
    /// An explicit list, run in order as one group to a fixed point.
    Explicit(Vec<String>),
}

impl Pipeline {
    /// From an -O level.
    pub fn from_level(level: u8) -> Pipeline {
        match level {
            0 => Pipeline::None,
            1 => Pipeline::Declutter,
            _ => Pipeline::Full,
        }
    }
}

/// What one pass did over a whole run of the pipeline: `*_before` is the graph the pass first ran
/// on (for the first pass, the imported graph), `*_after` that plus the pass's own changes over
/// every sweep (other passes' effects in between are not counted), so `after - before` is the
/// pass's own effect and the effects of all passes add up to the pipeline's.
#[derive(Clone, Debug, Default)]
pub struct PassStats {
    pub name: &'static str,
    pub applied: usize,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub macs_before: u64,
    pub macs_after: u64,
    pub millis: f64,
}

/// Everything a pipeline run reports.
pub struct RunReport {
    /// Per pass, in pipeline order.
    pub stats: Vec<PassStats>,
    /// The IR after passes, as asked for with `print_after` / `diff`.
    pub snapshots: Vec<Snapshot>,
    /// Every conv the factorisation passes rewrote (and, in approximate mode, considered).
    pub factorizations: Vec<crate::passes::factorize::FactorizeRecord>,
}

/// Printed IR after a pass that changed the graph, for `--print-after` and `--diff`.
pub struct Snapshot {
    pub pass: &'static str,
    pub text: String,
    /// The IR before the pass (when diffs were asked for).
    pub before: Option<String>,
}

/// Runs passes over a graph.
pub struct PassManager {
    groups: Vec<Vec<Box<dyn Pass>>>,
    pub options: PassOptions,
    /// Passes after which to print the IR (`all` for every pass).
    pub print_after: Vec<String>,
    /// Keep the IR before every pass that changes the graph, for diffs.
    pub diff: bool,
    /// Gives up on a group after this many sweeps without reaching a fixed point.
    pub max_sweeps: usize,
}

/// Upper bound of nodes a node count can be: the nodes that compute, not inputs or constants.
fn op_nodes(g: &Graph) -> usize {
    g.node_ids().filter(|&id| !matches!(g.node(id).op, Op::Input(_) | Op::Const(_))).count()
}

impl PassManager {
    /// Builds the pipeline, leaving out `disabled` passes. Unknown names are an error.
    pub fn new(pipeline: &Pipeline, disabled: &[String], options: PassOptions) -> Result<PassManager, PassError> {
        let known: Vec<&'static str> = all_passes().iter().map(|p| p.name()).collect();
        for d in disabled {
            if !known.contains(&d.as_str()) {
                return Err(PassError::UnknownPass(d.clone(), known.join(", ")));
            }
        }
        let pick = |names: &[&str]| -> Result<Vec<Box<dyn Pass>>, PassError> {
            let mut out = vec![];
            for &n in names {
                if disabled.iter().any(|d| d == n) {
                    continue;
                }
                let pass = all_passes()
                    .into_iter()
                    .find(|p| p.name() == n)
                    .ok_or_else(|| PassError::UnknownPass(n.to_string(), known.join(", ")))?;
                out.push(pass);
            }
            Ok(out)
        };
        // An approximation tolerance adds the approximate factorisation right after the exact one.
        let mut declutter = declutter_names();
        if options.factorize_tolerance.is_some() {
            let at = declutter.iter().position(|&n| n == "factorize").map_or(declutter.len(), |i| i + 1);
            declutter.insert(at, "factorize-approx");
        }
        let groups = match pipeline {
            Pipeline::None => vec![],
            Pipeline::Declutter => vec![pick(&declutter)?],
            Pipeline::Full => vec![pick(&declutter)?, pick(&lower_names())?],
            Pipeline::Explicit(names) => {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                vec![pick(&names)?]
            }
        };
        Ok(PassManager { groups, options, print_after: vec![], diff: false, max_sweeps: 16 })
    }

    /// Names of the passes that will run, in order.
    pub fn pass_names(&self) -> Vec<&'static str> {
        self.groups.iter().flatten().map(|p| p.name()).collect()
    }

    /// Runs every group to a fixed point.
    pub fn run(&self, g: &mut Graph) -> Result<RunReport, PassError> {
        self.run_observed(g, &mut |_, _| {})
    }

    /// Like [`PassManager::run`], calling `observe(pass, graph)` after every sweep that changed
    /// the graph (for bisecting a numerical difference to the pass that introduced it).
    pub fn run_observed(
        &self,
        g: &mut Graph,
        observe: &mut dyn FnMut(&'static str, &Graph),
    ) -> Result<RunReport, PassError> {
        let cx = PassContext { options: &self.options, factorize: Default::default(), consts: Default::default() };
        let mut stats: Vec<PassStats> =
            self.groups.iter().flatten().map(|p| PassStats { name: p.name(), ..PassStats::default() }).collect();
        let mut snapshots = vec![];
        let mut seen = vec![false; stats.len()];
        let mut index = 0;
        for group in &self.groups {
            let base = index;
            for _ in 0..self.max_sweeps {
                let mut changed = false;
                for (k, pass) in group.iter().enumerate() {
                    let st = &mut stats[base + k];
                    let (nodes, macs) = (op_nodes(g), Stats::of(g).total_macs);
                    let wants_text = self.diff || self.print_after.iter().any(|p| p == "all" || p == pass.name());
                    let before = if self.diff { Some(print(g, pass.name())?) } else { None };
                    let start = Instant::now();
                    let applied = sweep(pass.as_ref(), g, &cx)?;
                    st.millis += start.elapsed().as_secs_f64() * 1e3;
                    // Before/after count this pass's own changes from the graph it first ran on;
                    // a later sweep must not reset them (that showed the last sweep's count).
                    if !seen[base + k] {
                        seen[base + k] = true;
                        (st.nodes_before, st.macs_before, st.nodes_after, st.macs_after) = (nodes, macs, nodes, macs);
                    }
                    st.applied += applied;
                    if applied > 0 {
                        verify(g).map_err(|error| PassError::Verify { pass: pass.name(), error })?;
                        changed = true;
                        st.nodes_after = (st.nodes_after + op_nodes(g)).saturating_sub(nodes);
                        // MAC counts saturate at u64::MAX (weights that are graph inputs bound nothing).
                        st.macs_after = st.macs_after.saturating_add(Stats::of(g).total_macs).saturating_sub(macs);
                    }
                    if applied > 0 && wants_text {
                        snapshots.push(Snapshot { pass: pass.name(), text: print(g, pass.name())?, before });
                    }
                    if applied > 0 {
                        observe(pass.name(), g);
                    }
                }
                if !changed {
                    break;
                }
            }
            index += group.len();
        }
        let factorizations = cx.factorize.records.into_inner().unwrap_or_default();
        Ok(RunReport { stats, snapshots, factorizations })
    }
}

fn print(g: &Graph, pass: &'static str) -> Result<String, PassError> {
    incept_ir::text::print(g).map_err(|error| PassError::Verify { pass, error })
}

/// One sweep of a pass over the nodes in topological order; returns how many patches applied.
fn sweep(pass: &dyn Pass, g: &mut Graph, cx: &PassContext) -> Result<usize, PassError> {
    let order = g.topo_order().map_err(|error| PassError::Verify { pass: pass.name(), error })?;
    let outputs_before: Vec<String> = g.outputs().iter().map(|&v| g.value(v).name.clone()).collect();
    let mut applied = 0;
    for id in order {
        if !g.contains(id) {
            continue;
        }
        let node = g.node(id);
        let patch = pass.rewrite(g, id, cx).map_err(|error| PassError::Rule {
            pass: pass.name(),
            node: node.name.clone(),
            op: node.op.name().to_string(),
            error,
        })?;
        if let Some(patch) = patch.filter(|p| !p.is_empty()) {
            let at = g.node(id).name.clone();
            patch.apply(g, pass.name(), &at)?;
            applied += 1;
        }
    }
    let outputs_after: Vec<String> = g.outputs().iter().map(|&v| g.value(v).name.clone()).collect();
    if outputs_before != outputs_after {
        return Err(PassError::Patch {
            pass: pass.name(),
            node: String::new(),
            msg: format!("renamed graph outputs {outputs_before:?} to {outputs_after:?}"),
        });
    }
    Ok(applied)
}
