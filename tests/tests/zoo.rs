//! The full-size ResNet50, InceptionV3 and Xception from bench/zoo/make_zoo.py (about 100 MB
//! each, so not committed). The tests are ignored by default, so that a plain `cargo test` does
//! not report them as passed when it never ran them; run them with
//! `INCEPT_ZOO_DIR=DIR cargo test --release -p incept-tests --test zoo -- --ignored`, DIR being
//! the folder make_zoo.py wrote. Once asked for, a missing folder or model is a failure.

use std::path::PathBuf;

use incept_ir::text::{self, ConstPool};
use incept_ir::{interp, npy, onnx, verify};
use incept_tests::max_rel_err;

const MODELS: [&str; 3] = ["ResNet50", "InceptionV3", "Xception"];

/// The zoo models: (name, model path, input, ONNX Runtime's output).
fn zoo_models() -> Vec<(&'static str, PathBuf, incept_ir::Tensor, incept_ir::Tensor)> {
    let dir = incept_tests::zoo_dir();
    MODELS
        .into_iter()
        .map(|name| {
            let path = dir.join(format!("{name}.onnx"));
            let input = npy::read(&dir.join(format!("{name}.input.npy"))).unwrap_or_else(|e| panic!("{name}: {e}"));
            let want = npy::read(&dir.join(format!("{name}.ort_output.npy"))).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, path, input, want)
        })
        .collect()
}

#[test]
#[ignore = "needs INCEPT_ZOO_DIR (bench/zoo/make_zoo.py); run with -- --ignored"]
fn zoo_models_import_print_and_match_onnx_runtime() {
    for (name, path, input, want) in zoo_models() {
        let start = std::time::Instant::now();
        let g = onnx::load(&path, &Default::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let import_ms = start.elapsed().as_secs_f64() * 1e3;
        verify::verify(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
        let printed = text::print(&g).expect("print");
        let parsed = text::parse_with(&printed, &ConstPool::from_graph(&g)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(printed, text::print(&parsed).expect("print"), "{name}: print -> parse -> print differs");
        let start = std::time::Instant::now();
        let got = interp::run(&g, &[input]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let run_s = start.elapsed().as_secs_f64();
        let err = max_rel_err(&got[0], &want).expect("compare");
        println!(
            "{name}: import {import_ms:.1} ms, {} nodes, reference run {run_s:.1} s, relative error {err:.2e}",
            g.node_count()
        );
        assert!(err <= 1e-4, "{name}: relative error {err:e} exceeds 1e-4");
    }
}

/// The JIT on the zoo: outputs within 1e-4 of ONNX Runtime's at 1 and 2 threads (and the same
/// bits at both), and an arena within 1.15x of its lower bound.
#[test]
#[ignore = "needs INCEPT_ZOO_DIR (bench/zoo/make_zoo.py); run with -- --ignored"]
fn zoo_models_compile_and_match_onnx_runtime() {
    use incept_compiler::{CompileOptions, compile_with_report, from_runtime, to_runtime};
    for (name, path, input, want) in zoo_models() {
        let mut outs = vec![];
        for threads in [1, 2] {
            let opts = CompileOptions { threads, ..Default::default() };
            let (model, report) = compile_with_report(path.as_path(), &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
            let out = model.run(&[to_runtime(&input).expect("input")]).unwrap_or_else(|e| panic!("{name}: {e}"));
            let got = from_runtime(&out[0]).expect("output");
            let err = max_rel_err(&got, &want).expect("compare");
            let ratio = report.arena_bytes as f64 / report.arena_lower_bound.max(1) as f64;
            println!(
                "{name} JIT ({threads} threads): relative error {err:.2e}, arena {} bytes, bound {}, ratio {ratio:.3}",
                report.arena_bytes, report.arena_lower_bound
            );
            assert!(err <= 1e-4, "{name}: relative error {err:e} exceeds 1e-4");
            assert!(ratio <= 1.15, "{name}: arena {ratio:.3}x its lower bound");
            outs.push(got);
        }
        assert!(outs[0].bytes() == outs[1].bytes(), "{name}: 1 and 2 threads give different bits");
    }
}

/// `check` on the full-size models: the JIT agrees with the interpreter, and a corrupted node in
/// the middle of the network is found and named.
#[test]
#[ignore = "needs INCEPT_ZOO_DIR (bench/zoo/make_zoo.py); run with -- --ignored"]
fn zoo_models_pass_check_and_a_broken_node_is_named() {
    use incept_compiler::check::{CheckOptions, Culprit, check};
    use incept_compiler::{CompileOptions, Fault};
    for (name, path, input, _) in zoo_models() {
        let g = onnx::load(&path, &Default::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut options = CheckOptions { compile: CompileOptions::default(), tolerance: 1e-4, always_bisect: false };
        let start = std::time::Instant::now();
        let report = check(&g, std::slice::from_ref(&input), &options).unwrap_or_else(|e| panic!("{name}: {e}"));
        println!("{name}: check in {:.1} s: {:?}", start.elapsed().as_secs_f64(), report.timings);
        assert!(report.passed(), "{name}: {:?}", report.outputs);
        // The middle conv of the optimised graph.
        let mut opt = g.clone();
        incept_compiler::passes::PassManager::new(&incept_compiler::passes::Pipeline::Full, &[], Default::default())
            .expect("passes")
            .run(&mut opt)
            .expect("optimise");
        let convs: Vec<String> = opt
            .topo_order()
            .expect("order")
            .into_iter()
            .filter(|&id| opt.node(id).op.name() == "Conv")
            .map(|id| opt.node(id).name.clone())
            .collect();
        let victim = convs[convs.len() / 2].clone();
        options.compile.fault = Some(Fault::Corrupt { node: victim.clone() });
        let report = check(&g, std::slice::from_ref(&input), &options).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!report.passed(), "{name}: corrupting {victim} went unnoticed");
        match report.culprit {
            Some(Culprit::Node { first, .. }) => assert_eq!(first.node, victim, "{name}"),
            other => panic!("{name}: blamed {other:?} instead of {victim}"),
        }
    }
}

/// bf16 on the zoo (where this CPU runs a bf16 tier): every node's kernels agree with the
/// interpreter on its inputs rounded to bf16 (`check`), and the top-1 class of the stored input
/// is ONNX Runtime's.
#[test]
#[ignore = "needs INCEPT_ZOO_DIR (bench/zoo/make_zoo.py); run with -- --ignored"]
fn zoo_models_in_bf16_pass_check_and_keep_top1() {
    use incept_compiler::check::{CheckOptions, check};
    use incept_compiler::{CompileOptions, Precision};
    if incept_compiler::Cpu::Native.bf16_tier().is_none() {
        println!("skipped: this CPU runs no bf16 tier");
        return;
    }
    for (name, path, input, want) in zoo_models() {
        let g = onnx::load(&path, &Default::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let opts = CheckOptions {
            compile: CompileOptions { precision: Precision::Bf16, ..Default::default() },
            tolerance: 1e-4,
            always_bisect: false,
        };
        let report = check(&g, std::slice::from_ref(&input), &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(report.bf16 && report.passed(), "{name}: a bf16 node disagrees: {:?}", report.culprit);
        let (model, _) = incept_compiler::compile_graph(g, &opts.compile).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = model.run(&[incept_compiler::to_runtime(&input).expect("input")]).expect("run");
        let got = incept_compiler::from_runtime(&got[0]).expect("output").to_f64s().expect("f64");
        let want = want.to_f64s().expect("f64");
        let argmax = |v: &[f64]| v.iter().enumerate().fold(0, |b, (i, x)| if *x > v[b] { i } else { b });
        println!("{name}: bf16 output error {:.3e}", report.outputs[0].error.max_rel);
        assert_eq!(argmax(&got), argmax(&want), "{name}: bf16 changed the top-1 class");
    }
}
