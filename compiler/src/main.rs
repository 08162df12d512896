//! The `incept` command-line tool.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// incept: a compiler for ONNX convolutional networks on CPUs.
///
/// Today incept imports ONNX models into its graph IR, optimises them with exact graph rewrites,
/// prints and inspects them, and runs them with the reference interpreter (the definition every
/// optimisation and kernel is checked against).
#[derive(Parser)]
#[command(name = "incept", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Inspect(cli::inspect::InspectArgs),
    Run(cli::run::RunArgs),
    Ops(cli::ops::OpsArgs),
    Passes(cli::passes::PassesArgs),
}

fn main() -> ExitCode {
    // A panic is a bug in incept; say so plainly instead of printing a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("incept: internal error (this is a bug, please report it): {info}");
    }));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Run(a) => cli::run::run(a),
        Command::Ops(a) => cli::ops::run(a),
        Command::Passes(a) => cli::passes::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
