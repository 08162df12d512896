//! The `incept` command-line tool.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// incept: a compiler for ONNX convolutional networks on CPUs.
///
/// incept imports ONNX models into its graph IR, optimises them with exact graph rewrites, and
/// compiles them with Cranelift to shape-specialised, vectorised kernels that a slim runtime runs
/// in parallel. The reference interpreter (`run --reference`) defines what every op means.
#[derive(Parser)]
#[command(name = "incept", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Compile(cli::compile::CompileArgs),
    Bench(cli::bench::BenchArgs),
    Check(cli::check::CheckArgs),
    Inspect(cli::inspect::InspectArgs),
    Keygen(cli::keygen::KeygenArgs),
    Run(cli::run::RunArgs),
    Ops(cli::ops::OpsArgs),
    Passes(cli::passes::PassesArgs),
    Peak(cli::peak::PeakArgs),
}

fn main() -> ExitCode {
    // A panic is a bug in incept; say so plainly instead of printing a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("incept: internal error (this is a bug, please report it): {info}");
    }));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Compile(a) => cli::compile::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Check(a) => cli::check::run(a),
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Keygen(a) => cli::keygen::run(a),
        Command::Run(a) => cli::run::run(a),
        Command::Ops(a) => cli::ops::run(a),
        Command::Passes(a) => cli::passes::run(a),
        Command::Peak(a) => cli::peak::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("error: {msg}");
            // The libraries name their own options; on the command line those are flags.
            if msg.contains("ImportOptions::dims") || msg.contains("input_shapes") {
                eprintln!("hint: bind symbolic dimensions with --dim NAME=SIZE, or whole input shapes with --shape");
            }
            ExitCode::FAILURE
        }
    }
}
