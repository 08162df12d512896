//! A deterministic fuzz run inside `cargo test`: thousands of structure-aware mutations of the
//! fixture models and the vendored single-op models (attribute values, initializer dims and
//! values, input shapes, node inputs, op types, new nodes), each taken through import,
//! verification, the text form, the interpreter, the passes, compilation and a run, as far as it
//! goes. Errors are the expected answer to a bad model; a panic anywhere fails the test, and the
//! model that caused it is written out for a regression test. The fuzz targets in `fuzz/` run the
//! same mutations with libFuzzer choosing them.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use incept_ir::text::parse::SplitMix;
use incept_tests::exercise::{Budget, Stage, Tally, exercise_bytes};
use incept_tests::mutate::{Seed, importable_seeds, mutate, sweep};
use prost::Message;

const CASES: usize = 4000;
const RNG_SEED: u64 = 0x5eed_f022;
const SWEEP_STRIDE: usize = 5;
const SWEEP_PER_SEED: usize = 40;

fn seeds() -> Vec<Seed> {
    let seeds = importable_seeds();
    let fixtures = seeds.iter().filter(|s| !s.name.starts_with("node/")).count();
    assert!(fixtures >= 20, "the fixture models are missing ({fixtures} import)");
    assert!(seeds.len() - fixtures >= 400, "the vendored node tests are missing ({} import)", seeds.len() - fixtures);
    seeds
}

#[test]
fn mutated_models_never_panic() {
    let start = Instant::now();
    let seeds = seeds();
    let mut tally = Tally::default();
    let mut panics = vec![];
    let mut inconsistent = vec![];
    // A longer local run: INCEPT_FUZZ_CASES=100000 (and INCEPT_FUZZ_SEED for another sequence).
    let env = |k: &str| std::env::var(k).ok().and_then(|s| s.parse().ok());
    let cases = env("INCEPT_FUZZ_CASES").map_or(CASES, |n| n as usize);
    let mut rng = SplitMix(env("INCEPT_FUZZ_SEED").unwrap_or(RNG_SEED));
    for case in 0..cases {
        let seed = &seeds[(rng.next_u64() % seeds.len() as u64) as usize];
        let mut model = seed.model.clone();
        let n = 1 + (rng.next_u64() % 4) as usize;
        mutate(&mut model, &mut rng, n);
        let bytes = model.encode_to_vec();
        // Every other case skips the passes, so that unoptimised graphs reach the backend too.
        let budget = Budget { optimize: case % 2 == 0, ..Budget::default() };
        match catch_unwind(AssertUnwindSafe(|| exercise_bytes(&bytes, &budget))) {
            Ok(outcome) => {
                for (stage, msg) in outcome.invariant_breaks() {
                    inconsistent.push(format!("case {case} ({}): {stage:?}: {msg}", seed.name));
                }
                if let Some(m) = &outcome.mismatch {
                    inconsistent.push(format!("case {case} ({}): {m}", seed.name));
                }
                tally.add(&outcome);
            }
            Err(_) => {
                let path = std::env::temp_dir().join(format!("incept-fuzz-smoke-{case}.onnx"));
                let _ = std::fs::write(&path, &bytes);
                panics.push(format!("case {case} ({}, {n} mutations): written to {}", seed.name, path.display()));
            }
        }
    }
    println!("fuzz smoke: {tally}\n  {} panics, {:.1} s", panics.len(), start.elapsed().as_secs_f64());
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
    assert!(inconsistent.is_empty(), "inconsistent results:\n{}", inconsistent.join("\n"));
    // The run must reach every stage, or it proves nothing about them.
    for stage in [Stage::Import, Stage::Verify, Stage::Interpret, Stage::Passes, Stage::Compile, Stage::Run] {
        let ok = tally.passed.get(&stage).copied().unwrap_or(0);
        assert!(ok >= 50, "only {ok} cases passed {stage:?}");
    }
    assert!(tally.failed.get(&Stage::Import).copied().unwrap_or(0) >= cases / 10, "the mutations change too little");
}

#[test]
fn parser_dictionary_names_every_op() {
    let path = incept_tests::repo_root().join("fuzz/dicts/ir_text.dict");
    let dict = std::fs::read_to_string(&path).expect("fuzz/dicts/ir_text.dict");
    for op in incept_ir::ops::OPS {
        assert!(
            dict.lines().any(|l| l == format!("\"{}\"", op.name)),
            "{} is missing from {}",
            op.name,
            path.display()
        );
    }
}

#[test]
fn one_change_sweeps_never_panic() {
    let start = Instant::now();
    let mut tally = Tally::default();
    let mut panics = vec![];
    let mut mismatches = vec![];
    let mut slowest = (std::time::Duration::ZERO, String::new());
    // Every SWEEP_STRIDE-th variant from a different first one per seed, and at most
    // SWEEP_PER_SEED per seed (the CNN fixtures repeat the same convs): about 4500 cases, so that
    // the test stays fast. A longer local run can set INCEPT_SWEEP_STRIDE=1.
    let env = |k: &str, default: usize| std::env::var(k).ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let stride = env("INCEPT_SWEEP_STRIDE", SWEEP_STRIDE);
    let per_seed = if stride == 1 { usize::MAX } else { SWEEP_PER_SEED };
    for (i, seed) in importable_seeds().iter().enumerate() {
        let variants = sweep(&seed.model);
        let step = stride.max(variants.len().div_ceil(per_seed));
        for (k, model) in variants.into_iter().enumerate().skip(i % step).step_by(step) {
            let bytes = model.encode_to_vec();
            let t = Instant::now();
            match catch_unwind(AssertUnwindSafe(|| exercise_bytes(&bytes, &Budget::default()))) {
                Ok(outcome) => {
                    slowest = slowest.max((t.elapsed(), format!("{} variant {k}", seed.name)));
                    if let Some(m) = &outcome.mismatch {
                        mismatches.push(format!("{} variant {k}: {m}", seed.name));
                    }
                    for (stage, msg) in outcome.invariant_breaks() {
                        mismatches.push(format!("{} variant {k}: {stage:?}: {msg}", seed.name));
                    }
                    tally.add(&outcome);
                }
                Err(_) => {
                    let path =
                        std::env::temp_dir().join(format!("incept-sweep-{}-{k}.onnx", seed.name.replace('/', "_")));
                    let _ = std::fs::write(&path, &bytes);
                    panics.push(format!("{} variant {k}: written to {}", seed.name, path.display()));
                }
            }
        }
    }
    println!(
        "sweeps: {tally}\n  {} panics, {:.1} s (slowest case: {}, {:.2} s)",
        panics.len(),
        start.elapsed().as_secs_f64(),
        slowest.1,
        slowest.0.as_secs_f64()
    );
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
    assert!(mismatches.is_empty(), "inconsistent results:\n{}", mismatches.join("\n"));
    let run = tally.passed.get(&Stage::Run).copied().unwrap_or(0);
    assert!(run >= tally.cases / 4, "only {run} of {} variants ran compiled", tally.cases);
}
