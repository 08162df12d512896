//! `incept ops`: the supported operators.

use anyhow::Result;
use clap::Args;

/// List the supported ONNX operators, their first opset and notes.
#[derive(Args)]
pub struct OpsArgs {
    /// Print the Markdown table the README carries.
    #[arg(long)]
    markdown: bool,
}

pub fn run(a: OpsArgs) -> Result<()> {
    if a.markdown {
        return crate::cli::out(&incept_ir::ops::markdown_table());
    }
    let mut s = String::new();
    for o in incept_ir::ops::OPS {
        s.push_str(&format!("{:<20} since opset {:<3} {}\n", o.name, o.since.max(incept_ir::ops::MIN_OPSET), o.notes));
    }
    crate::cli::out(&s)
}
