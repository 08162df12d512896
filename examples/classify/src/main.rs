//! classify: the smallest useful incept application. It links only `incept-runtime`, loads a
//! model compiled ahead of time (`incept compile model.onnx -o model.incept`), runs one `.npy`
//! input and prints the five highest scores of each image in the batch.
//!
//! Usage: classify MODEL.incept INPUT.npy [--threads N] [--top K]

use std::process::ExitCode;

use incept_runtime::{Model, RunOptions, npy, top_k};

struct Args {
    model: String,
    input: String,
    threads: usize,
    top: usize,
}

const USAGE: &str = "usage: classify MODEL.incept INPUT.npy [--threads N] [--top K]\n\
    Runs a compiled incept model on one .npy input and prints the top-K scores (default 5) of each\n\
    row of its first output. --threads 0 (the default) uses every physical core.";

fn parse_args() -> Result<Args, String> {
    let mut positional = vec![];
    let (mut threads, mut top) = (0, 5);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut number = |flag: &str| -> Result<usize, String> {
            let v = it.next().ok_or(format!("{flag} needs a value"))?;
            v.parse().map_err(|_| format!("{flag} takes a whole number, not '{v}'"))
        };
        match a.as_str() {
            "--threads" => threads = number("--threads")?,
            "--top" => top = number("--top")?,
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option '{s}'")),
            _ => positional.push(a),
        }
    }
    match <[String; 2]>::try_from(positional) {
        Ok([model, input]) => Ok(Args { model, input, threads, top }),
        Err(_) => Err("give a model and an input".into()),
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let model = Model::load(&args.model, &RunOptions { threads: args.threads })?;
    let input = npy::read(&args.input)?;
    let outputs = model.run(&[input])?;
    let scores = &outputs[0];
    let values = scores.as_f32()?;
    // One row per image: the last axis holds the classes.
    let classes = scores.shape().last().copied().unwrap_or(1).max(1);
    for (image, row) in values.chunks(classes).enumerate() {
        if values.len() > classes {
            println!("image {image}:");
        }
        for (class, score) in top_k(row, args.top) {
            println!("{class:>6} {score:>12.6}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("classify: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("classify: {e}");
            ExitCode::FAILURE
        }
    }
}
