//! Helpers for pass tests: parse a text graph, run passes, compare the reference interpreter on
//! the graph before and after on seeded random inputs.

#![allow(dead_code)]

use incept_compiler::passes::{PassManager, PassOptions, PassStats, Pipeline};
use incept_ir::text::parse::SplitMix;
use incept_ir::{DType, Graph, Tensor, interp, text, verify};

/// Parses `src`, runs the named passes to a fixed point; returns (before, after, stats).
pub fn run_passes(src: &str, passes: &[&str]) -> (Graph, Graph, Vec<PassStats>) {
    run_with(src, passes, PassOptions::default())
}

pub fn run_with(src: &str, passes: &[&str], options: PassOptions) -> (Graph, Graph, Vec<PassStats>) {
    let before = text::parse(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    verify::verify(&before).expect("input graph verifies");
    let mut after = before.clone();
    let pipeline = Pipeline::Explicit(passes.iter().map(|s| s.to_string()).collect());
    let pm = PassManager::new(&pipeline, &[], options).expect("pipeline");
    let stats = pm.run(&mut after).unwrap_or_else(|e| panic!("{e}")).stats;
    verify::verify(&after).expect("output graph verifies");
    (before, after, stats)
}

/// Seeded uniform [-1, 1) inputs for every graph input (f32 or f64).
pub fn random_inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    let mut rng = SplitMix(seed);
    g.input_values()
        .into_iter()
        .map(|v| {
            let ty = g.ty(v);
            let dims = ty.static_dims().expect("test graphs have static input shapes");
            let n = dims.iter().product();
            match ty.dtype {
                DType::F64 => Tensor::from_vec(dims, (0..n).map(|_| rng.uniform()).collect()),
                _ => Tensor::from_vec(dims, (0..n).map(|_| rng.uniform() as f32).collect()),
            }
        })
        .collect()
}

/// Largest |a - b| over the largest |b|, across all outputs.
pub fn rel_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
    let mut worst = 0f64;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.shape(), y.shape(), "output shapes differ");
        let (x, y) = (x.to_f64s().expect("numeric"), y.to_f64s().expect("numeric"));
        let scale = y.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
        let d = x.iter().zip(&y).fold(0f64, |m, (p, q)| m.max((p - q).abs()));
        worst = worst.max(d / scale);
    }
    worst
}

/// The reference interpreter gives the same outputs (within `tol`, relative) before and after.
pub fn assert_same(before: &Graph, after: &Graph, tol: f64) {
    for seed in [1, 2, 3] {
        let inputs = random_inputs(before, seed);
        let a = interp::run(before, &inputs).expect("run before");
        let b = interp::run(after, &inputs).expect("run after");
        let d = rel_diff(&b, &a);
        assert!(d <= tol, "outputs differ by {d:e} (relative) after the passes");
    }
}

pub fn print(g: &Graph) -> String {
    text::print(g).expect("print")
}

/// How many nodes run op `name`.
pub fn count(g: &Graph, name: &str) -> usize {
    g.node_ids().filter(|&id| g.node(id).op.name() == name).count()
}
