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
        print!("{}", incept_ir::ops::markdown_table());
    } else {
        for o in incept_ir::ops::OPS {
            println!("{:<20} since opset {:<3} {}", o.name, o.since, o.notes);
        }
    }
    Ok(())
}
