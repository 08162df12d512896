//! `incept passes`: the optimisation passes and the pipelines that run them.

use anyhow::Result;
use clap::Args;
use incept_compiler::passes::{Exactness, all_passes, declutter_names, lower_names};

/// List the optimisation passes, what they do, and which -O level runs them.
#[derive(Args)]
pub struct PassesArgs {}

pub fn run(_: PassesArgs) -> Result<()> {
    let (d, l) = (declutter_names(), lower_names());
    let mut s = String::new();
    for p in all_passes() {
        let level = if d.contains(&p.name()) {
            "-O1"
        } else if l.contains(&p.name()) {
            "-O2"
        } else {
            "opt-in"
        };
        let exact = match p.exactness() {
            Exactness::Rounding => "exact",
            Exactness::Approximate => "approximate",
        };
        s.push_str(&format!("{:<24} {level:<7} {exact:<12} {}\n", p.name(), p.description()));
    }
    crate::cli::out(&s)
}
