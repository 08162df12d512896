//! Feature extraction (issue 9): a model cut at an intermediate value, compiled and interpreted,
//! against ONNX Runtime on the same cut (`onnx.utils.extract_model`, written by
//! tests/fixtures/tools/make_cut_fixture.py).

use incept_compiler::check::{CheckOptions, check};
use incept_compiler::compile::CompileError;
use incept_compiler::passes::Pipeline;
use incept_compiler::{CompileOptions, compile_with_report, from_runtime, to_runtime};
use incept_ir::error::CutError;
use incept_ir::{Tensor, interp, npy, onnx};
use incept_tests::{fixtures_dir, max_rel_err};

/// mini_resnet's GlobalAveragePool output, f32[1,32,1,1]: fused passes would otherwise feed it
/// straight into the Squeeze and Gemm that follow.
const POOL: &str = "mini_resnet_1/avg_pool_1/Mean:0";
/// The first block's output: an intermediate value that the second block also reads.
const BLOCK1: &str = "mini_resnet_1/block1_out_1/Relu:0";

fn input() -> Tensor {
    npy::read(&fixtures_dir().join("mini_resnet.input.npy")).expect("input")
}

fn model() -> std::path::PathBuf {
    fixtures_dir().join("mini_resnet.onnx")
}

fn max_abs(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.shape(), want.shape());
    let (g, w) = (got.to_f64s().expect("f64"), want.to_f64s().expect("f64"));
    g.iter().zip(&w).fold(0f64, |m, (a, b)| m.max((a - b).abs()))
}

fn compiled_outputs(outputs: &[&str], pipeline: Pipeline) -> (Vec<Tensor>, usize) {
    let opts = CompileOptions {
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
        pipeline,
        threads: 1,
        ..Default::default()
    };
    let (model, report) = compile_with_report(model().as_path(), &opts).expect("compile");
    let names: Vec<&str> = model.plan().outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, outputs, "the compiled model's outputs are the chosen values, in order");
    let outs = model.run(&[to_runtime(&input()).expect("input")]).expect("run");
    (outs.iter().map(|t| from_runtime(t).expect("output")).collect(), report.steps)
}

fn interpreted_outputs(outputs: &[&str]) -> Vec<Tensor> {
    let mut g = onnx::load(&model(), &Default::default()).expect("import");
    incept_ir::cut::cut(&mut g, outputs).expect("cut");
    interp::run(&g, &[input()]).expect("interpret")
}

#[test]
fn pool_output_matches_onnx_runtime_extract_model() {
    let want = npy::read(&fixtures_dir().join("mini_resnet.avg_pool.ort_output.npy")).expect("ORT output");
    assert_eq!(want.shape(), [1, 32, 1, 1]);
    let reference = interpreted_outputs(&[POOL]);
    let err = max_abs(&reference[0], &want);
    println!("interpreter vs ONNX Runtime: max abs {err:.2e}");
    assert!(err <= 1e-4, "interpreter: max abs error {err:e} vs ONNX Runtime");
    for pipeline in [Pipeline::Full, Pipeline::None] {
        let (got, _) = compiled_outputs(&[POOL], pipeline.clone());
        let err = max_abs(&got[0], &want);
        println!("JIT ({pipeline:?}) vs ONNX Runtime: max abs {err:.2e}");
        assert!(err <= 1e-4, "JIT ({pipeline:?}): max abs error {err:e} vs ONNX Runtime");
    }
}

#[test]
fn cut_model_does_less_work_than_the_full_one() {
    let full = CompileOptions { threads: 1, ..Default::default() };
    let (_, full) = compile_with_report(model().as_path(), &full).expect("compile");
    let (_, cut_steps) = compiled_outputs(&[POOL], Pipeline::Full);
    let (_, early_steps) = compiled_outputs(&[BLOCK1], Pipeline::Full);
    assert!(cut_steps < full.steps, "cut at the pool: {cut_steps} steps, full model {}", full.steps);
    assert!(early_steps < cut_steps, "cut after block 1: {early_steps} steps, at the pool {cut_steps}");
}

#[test]
fn several_outputs_one_also_consumed_further() {
    let outputs = [POOL, BLOCK1];
    let reference = interpreted_outputs(&outputs);
    assert_eq!(reference[0].shape(), [1, 32, 1, 1]);
    assert_eq!(reference[1].shape(), [1, 32, 8, 8]);
    let (got, _) = compiled_outputs(&outputs, Pipeline::Full);
    for (k, (g, w)) in got.iter().zip(&reference).enumerate() {
        let err = max_rel_err(g, w).expect("compare");
        assert!(err <= 1e-4, "output {k} ({}): relative error {err:e}", outputs[k]);
    }
    // The pool value read on its own is the same.
    let alone = interpreted_outputs(&[POOL]);
    assert_eq!(alone[0].bytes(), reference[0].bytes());
}

#[test]
fn a_value_fusion_would_absorb_stays_materialised() {
    // A conv output that BN folding (the Mul and Add after it) and ReLU fusion rewrite away when
    // the cut comes after the passes.
    let conv = "mini_resnet_1/block1_2_conv_1/BiasAdd:0";
    let reference = interpreted_outputs(&[conv]);
    let (got, _) = compiled_outputs(&[conv], Pipeline::Full);
    let err = max_rel_err(&got[0], &reference[0]).expect("compare");
    assert!(err <= 1e-4, "relative error {err:e}");
}

#[test]
fn check_compares_the_cut_model() {
    let g = onnx::load(&model(), &Default::default()).expect("import");
    let compile = CompileOptions { outputs: vec![POOL.into()], threads: 1, ..Default::default() };
    let report =
        check(&g, &[input()], &CheckOptions { compile, tolerance: 1e-4, always_bisect: false }).expect("check");
    let names: Vec<&str> = report.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, [POOL]);
    assert!(report.passed(), "{:?}", report.outputs);
}

#[test]
fn unknown_output_name_is_a_typed_error_with_the_closest_names() {
    let opts = CompileOptions { outputs: vec!["avg_pool_1/Mean".into()], ..Default::default() };
    match compile_with_report(model().as_path(), &opts) {
        Err(CompileError::Import(incept_ir::Error::Cut(CutError::UnknownValue { name, closest }))) => {
            assert_eq!(name, "avg_pool_1/Mean");
            assert_eq!(closest.first().map(String::as_str), Some(POOL), "{closest:?}");
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("compiled with an unknown output name"),
    }
}
