//! Differential tests of the optimisation pipeline: every fixture and every passing conformance
//! case, interpreted before and after -O2, agree within 1e-5 relative; the zoo models (ignored
//! tests: run them with INCEPT_ZOO_DIR set and `-- --ignored`) also lose every BatchNormalization, Dropout, Identity and standalone per-channel
//! Mul/Add.

use incept_compiler::passes::{PassManager, PassOptions, Pipeline};
use incept_ir::{Graph, Op, Tensor, interp, npy, onnx, verify};
use incept_tests::conformance::{case_dir, cases, import_case, read_set, test_sets};
use incept_tests::{FIXTURES, fixtures_dir, max_rel_err};

fn optimize(g: &Graph) -> Graph {
    let mut out = g.clone();
    let pm = PassManager::new(&Pipeline::Full, &[], PassOptions::default()).expect("pipeline");
    pm.run(&mut out).unwrap_or_else(|e| panic!("{e}"));
    verify::verify(&out).expect("verify");
    out
}

fn worst(a: &[Tensor], b: &[Tensor]) -> f64 {
    a.iter().zip(b).map(|(x, y)| max_rel_err(x, y).unwrap_or(f64::INFINITY)).fold(0.0, f64::max)
}

#[test]
fn fixtures_before_and_after_o2_agree() {
    for name in FIXTURES {
        let dir = fixtures_dir();
        let input = npy::read(&dir.join(format!("{name}.input.npy"))).expect("input");
        let g = onnx::load_for_inputs(&dir.join(format!("{name}.onnx")), &Default::default(), &[(None, input.clone())])
            .expect("import");
        let o2 = optimize(&g);
        let a = interp::run(&g, std::slice::from_ref(&input)).expect("run -O0");
        let b = interp::run(&o2, &[input]).expect("run -O2");
        let d = worst(&b, &a);
        // The optimised IR, fused ops included, prints and parses back to itself.
        let printed = incept_ir::text::print(&o2).expect("print");
        let parsed = incept_ir::text::parse_with(&printed, &incept_ir::text::ConstPool::from_graph(&o2))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(printed, incept_ir::text::print(&parsed).expect("print"), "{name}: -O2 IR does not round-trip");
        let ort = npy::read(&dir.join(format!("{name}.ort_output.npy"))).expect("ORT");
        let e = max_rel_err(&b[0], &ort).expect("compare");
        println!(
            "{name}: -O2 vs -O0 {d:.2e}, -O2 vs ONNX Runtime {e:.2e}, nodes {} -> {}",
            g.node_count(),
            o2.node_count()
        );
        assert!(d <= 1e-5 && e <= 1e-4, "{name}: {d:e} / {e:e}");
    }
}

#[test]
fn conformance_cases_before_and_after_o2_agree() {
    let excluded = std::fs::read_to_string(incept_tests::repo_root().join("tests/conformance/exclusions.txt"))
        .expect("exclusions");
    let mut checked = 0;
    for case in cases() {
        if excluded
            .lines()
            .any(|l| l.split('|').next().map(|c| c.trim().trim_start_matches("~ ")) == Some(case.as_str()))
        {
            continue;
        }
        let dir = case_dir(&case);
        for set in test_sets(&dir).expect("sets") {
            let inputs = read_set(&set, "input").expect("inputs");
            let (g, inputs) = import_case(&dir.join("model.onnx"), inputs).unwrap_or_else(|e| panic!("{case}: {e}"));
            let o2 = optimize(&g);
            let a = interp::run(&g, &inputs).unwrap_or_else(|e| panic!("{case}: {e}"));
            let b = interp::run(&o2, &inputs).unwrap_or_else(|e| panic!("{case}: -O2: {e}"));
            let d = worst(&b, &a);
            assert!(d <= 1e-5, "{case}: -O2 differs from -O0 by {d:e}");
            checked += 1;
        }
    }
    println!("{checked} conformance test sets agree before and after -O2");
    assert!(checked > 500);
}

/// Nodes -O2 must not leave: what folding removes, and scale/shift by per-channel constants.
fn leftovers(g: &Graph) -> Vec<String> {
    let mut out = vec![];
    for id in g.node_ids() {
        let node = g.node(id);
        let bad = match &node.op {
            Op::BatchNorm(_) | Op::Dropout(_) | Op::Identity(_) => true,
            Op::Binary(incept_ir::ops::Binary::Mul | incept_ir::ops::Binary::Add) => {
                // A per-channel constant operand: [1, C, 1, ..] or [C, 1, ..].
                node.input_values().any(|v| {
                    g.const_value(v).is_some_and(|t| t.numel() > 1 && t.shape().iter().filter(|&&d| d > 1).count() == 1)
                })
            }
            _ => false,
        };
        if bad {
            out.push(format!("{} ({})", node.name, node.op.name()));
        }
    }
    out
}

#[test]
fn batchnorm_carrying_fixtures_lose_it() {
    for name in ["torch_resnet_mini", "torch_inception_mini", "torch_separable_mini", "mini_resnet", "mini_mobilenetv2"]
    {
        let g = onnx::load(&fixtures_dir().join(format!("{name}.onnx")), &Default::default()).expect("import");
        let left = leftovers(&optimize(&g));
        assert!(left.is_empty(), "{name}: -O2 left {left:?}");
    }
}

#[test]
#[ignore = "needs INCEPT_ZOO_DIR (bench/zoo/make_zoo.py); run with -- --ignored"]
fn zoo_models_after_o2() {
    let dir = incept_tests::zoo_dir();
    for name in ["ResNet50", "InceptionV3", "Xception"] {
        let path = dir.join(format!("{name}.onnx"));
        let g = onnx::load(&path, &Default::default()).expect("import");
        let o2 = optimize(&g);
        let left = leftovers(&o2);
        assert!(left.is_empty(), "{name}: -O2 left {left:?}");
        let input = npy::read(&dir.join(format!("{name}.input.npy"))).expect("input");
        let want = npy::read(&dir.join(format!("{name}.ort_output.npy"))).expect("ORT");
        let got = interp::run(&o2, &[input]).expect("run");
        let e = max_rel_err(&got[0], &want).expect("compare");
        println!("{name}: -O2 nodes {} -> {}, vs ONNX Runtime {e:.2e}", g.node_count(), o2.node_count());
        assert!(e <= 1e-4, "{name}: {e:e}");
    }
}

#[test]
#[ignore = "needs INCEPT_ZOO_DIR (bench/zoo/make_zoo.py); run with -- --ignored"]
fn zoo_inception_approximate_factorisation_report() {
    let path = incept_tests::zoo_dir().join("InceptionV3.onnx");
    let g = onnx::load(&path, &Default::default()).expect("import");
    for tol in [1e-2, 1e-1] {
        let mut o = g.clone();
        let pm = PassManager::new(
            &Pipeline::Full,
            &[],
            PassOptions { factorize_tolerance: Some(tol), ..PassOptions::default() },
        )
        .expect("pipeline");
        let report = pm.run(&mut o).expect("run");
        verify::verify(&o).expect("verify");
        // Every 5x5 conv is considered and reported, with its error and MACs.
        let fives =
            g.node_ids().filter(|&id| matches!(&g.node(id).op, Op::Conv(c) if c.window.kernel == [5, 5])).count();
        assert!(fives > 0);
        assert_eq!(report.factorizations.len(), fives, "{:?}", report.factorizations);
        let err = incept_compiler::passes::factorize::output_error(&g, &o, 7).expect("measure");
        print!("tolerance {tol:e}:\n{}", incept_compiler::passes::factorize::report(&report.factorizations, Some(err)));
        for r in &report.factorizations {
            assert!(r.macs_before > 0 && r.weight_error.is_finite());
            if r.applied {
                assert!(r.weight_error <= tol && r.macs_after < r.macs_before);
            }
        }
    }
}
