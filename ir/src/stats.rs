//! Model statistics for `incept inspect --stats`: op histogram, parameters, MACs, largest activation.

use std::collections::BTreeMap;
use std::fmt;

use crate::format::format_type;
use crate::graph::Graph;
use crate::ops::Op;

/// Counts over a whole graph.
#[derive(Debug, Default)]
pub struct Stats {
    /// Nodes per op type (graph inputs and constants excluded).
    pub ops: BTreeMap<String, usize>,
    /// Elements in all constants.
    pub params: usize,
    pub param_bytes: usize,
    /// Multiply-accumulates per op type for one run.
    pub macs: BTreeMap<String, u64>,
    pub total_macs: u64,
    /// The largest intermediate or output value: name, type, bytes.
    pub largest: Option<(String, String, usize)>,
    /// Symbolic dims of the graph (counted as 1).
    pub symbols: Vec<String>,
}

impl Stats {
    /// Statistics of a graph; symbolic dims count as 1 (e.g. per item of a dynamic batch).
    pub fn of(g: &Graph) -> Stats {
        let symbols: Vec<String> = g.symbols().into_iter().collect();
        if !symbols.is_empty() {
            let mut bound = g.clone();
            if bound.bind_dims(&symbols.iter().map(|s| (s.clone(), 1)).collect()).is_ok() {
                return Stats { symbols, ..Stats::of(&bound) };
            }
        }
        let mut s = Stats { symbols, ..Stats::default() };
        for id in g.node_ids() {
            let node = g.node(id);
            match &node.op {
                Op::Input(_) => continue,
                Op::Const(c) => {
                    s.params += c.value.numel();
                    s.param_bytes += c.value.bytes().len();
                    continue;
                }
                op => {
                    *s.ops.entry(op.name().to_string()).or_default() += 1;
                    let ins: Vec<Option<&crate::shape::TensorType>> =
                        node.inputs().iter().map(|i| i.map(|v| g.ty(v))).collect();
                    let types: Vec<_> = node.outputs.iter().map(|v| v.ty.clone()).collect();
                    let m = op.macs(&ins, &types);
                    if m > 0 {
                        // Weights may be graph inputs, so nothing bounds a node's count but
                        // its shapes: saturate rather than overflow.
                        let kind = s.macs.entry(op.name().to_string()).or_default();
                        *kind = kind.saturating_add(m);
                        s.total_macs = s.total_macs.saturating_add(m);
                    }
                }
            }
            for v in &node.outputs {
                let bytes = v.ty.numel().unwrap_or(0) * v.ty.dtype.size();
                if s.largest.as_ref().is_none_or(|l| bytes > l.2) {
                    s.largest = Some((v.name.clone(), format_type(&v.ty), bytes));
                }
            }
        }
        s
    }
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: usize = self.ops.values().sum();
        writeln!(f, "nodes: {nodes}")?;
        writeln!(f, "parameters: {} ({} bytes)", human(self.params as u64), self.param_bytes)?;
        writeln!(f, "MACs: {} ({})", human(self.total_macs), self.total_macs)?;
        if let Some((name, ty, bytes)) = &self.largest {
            writeln!(f, "largest activation: {name} {ty} ({bytes} bytes)")?;
        }
        if !self.symbols.is_empty() {
            writeln!(
                f,
                "symbolic dims {} counted as 1 (bind them with ImportOptions::dims for other sizes)",
                self.symbols.join(", ")
            )?;
        }
        writeln!(f, "{:<24} {:>6} {:>16} {:>7}", "op", "count", "MACs", "share")?;
        for (op, count) in &self.ops {
            let m = self.macs.get(op).copied().unwrap_or(0);
            let share = if self.total_macs > 0 { 100.0 * m as f64 / self.total_macs as f64 } else { 0.0 };
            writeln!(f, "{op:<24} {count:>6} {:>16} {share:>6.1}%", if m > 0 { human(m) } else { "-".into() })?;
        }
        Ok(())
    }
}
