//! Quantized fixtures (tests/fixtures/quant, made by bench/quantize.py with ONNX Runtime's
//! `quantize_static`) against ONNX Runtime's output on the same quantized model: the reference
//! interpreter and the JIT on every tier at one and two threads and through a written artifact.
//!
//! The rule is one quantisation step of the output. ONNX Runtime fuses QDQ groups into integer
//! kernels that sum exactly in i32, where the QDQ graph, as ONNX defines it and the interpreter
//! runs it, dequantizes and convolves in floats: a sum that lands within rounding of a halfway
//! point can requantise one step apart. Top-1 must agree.

use incept_compiler::{CompileOptions, Precision, artifact_info};
use incept_ir::ops::Op;
use incept_ir::{Tensor, interp, npy, onnx, verify};
use incept_runtime::artifact::encode;
use incept_runtime::{Model, RunOptions};
use incept_tests::fixtures_dir;

const MODELS: [&str; 5] =
    ["mini_resnet", "mini_inception", "mini_mobilenetv2", "mini_xception", "mini_inception_resnet"];
const FORMS: [&str; 3] = ["qdq", "qdq_pc", "qop"];

fn quant_dir() -> std::path::PathBuf {
    fixtures_dir().join("quant")
}

/// The output's quantisation step: the scale of the DequantizeLinear that makes it.
fn output_step(g: &incept_ir::Graph) -> f32 {
    let out = g.outputs()[0];
    let node = g.node(out.node);
    assert!(matches!(node.op, Op::DequantizeLinear(_)), "the output comes from {}", node.op.name());
    let scale = node.inputs()[1].expect("a scale");
    g.const_value(scale).expect("a constant scale").view::<f32>().expect("f32")[0]
}

fn argmax(t: &Tensor) -> usize {
    let v = t.view::<f32>().expect("f32");
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).expect("not empty")
}

/// The largest difference in output steps, and whether top-1 agrees.
fn steps_apart(got: &Tensor, want: &Tensor, step: f32) -> (f32, bool) {
    let (a, b) = (got.view::<f32>().expect("f32"), want.view::<f32>().expect("f32"));
    assert_eq!(a.len(), b.len());
    let worst = a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs() / step).fold(0f32, f32::max);
    (worst, argmax(got) == argmax(want))
}

fn check(what: &str, got: &Tensor, want: &Tensor, step: f32) {
    let (worst, top1) = steps_apart(got, want, step);
    println!("{what}: {worst:.2} steps apart, top-1 {}", if top1 { "equal" } else { "DIFFERENT" });
    // A hair above one step: the difference of two multiples of the step in f32.
    assert!(worst <= 1.0 + 1e-3, "{what}: {worst} output steps apart");
    assert!(top1, "{what}: top-1 differs");
}

/// The interpreter on every form. QOperator graphs compute with integer sums and ONNX
/// Runtime's requantisation, which the interpreter and the JIT follow to the bit: equal
/// outputs there.
#[test]
fn the_interpreter_matches_onnx_runtime_on_every_form() {
    for (model, form) in MODELS.iter().flat_map(|m| FORMS.iter().map(move |f| (*m, *f))) {
        let name = format!("{model}.{form}");
        let path = quant_dir().join(format!("{name}.onnx"));
        let input = npy::read(&fixtures_dir().join(format!("{model}.input.npy"))).expect("input");
        let want = npy::read(&quant_dir().join(format!("{name}.ort_output.npy"))).expect("ORT output");
        let g = onnx::load_for_inputs(&path, &Default::default(), &[(None, input.clone())])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        verify::verify(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = interp::run(&g, std::slice::from_ref(&input)).unwrap_or_else(|e| panic!("{name}: {e}"));
        check(&format!("{name} interpreter"), &got[0], &want, output_step(&g));
        if form == "qop" {
            assert_eq!(got[0].bytes(), want.bytes(), "{name}: the interpreter differs from ONNX Runtime");
        }
    }
}

#[test]
fn the_jit_matches_onnx_runtime() {
    let dir = std::env::temp_dir().join(format!("incept-quantized-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (model, form) in MODELS.iter().flat_map(|m| FORMS.iter().map(move |f| (*m, *f))) {
        let name = format!("{model}.{form}");
        let path = quant_dir().join(format!("{name}.onnx"));
        let input = npy::read(&fixtures_dir().join(format!("{model}.input.npy"))).expect("input");
        let want = npy::read(&quant_dir().join(format!("{name}.ort_output.npy"))).expect("ORT output");
        let g = onnx::load_for_inputs(&path, &Default::default(), &[(None, input.clone())])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        verify::verify(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
        let step = output_step(&g);
        // QDQ forms also as integer ops (--precision int8); QOperator ones are integer already.
        let precisions: &[Precision] =
            if form == "qop" { &[Precision::F32] } else { &[Precision::F32, Precision::Int8] };
        for (cpu, &precision) in
            incept_tests::graphs::tiers().into_iter().flat_map(|c| precisions.iter().map(move |p| (c, p)))
        {
            let mut import = incept_ir::onnx::ImportOptions::default();
            import.input_shapes.insert("input".into(), input.shape().to_vec());
            let opts = CompileOptions { import, threads: 1, cpu, precision, ..Default::default() };
            let name = format!("{name} {}", precision.name());
            let (compiled, _) = incept_compiler::compile_with_report(path.as_path(), &opts)
                .unwrap_or_else(|e| panic!("{name} ({cpu:?}): {e}"));
            if precision == Precision::Int8 {
                assert!(compiled.plan().steps.iter().any(|st| st.op == "QLinearConv"), "{name}: no integer conv");
            }
            let file = dir.join(format!("{name}.incept"));
            std::fs::write(&file, encode(compiled.plan(), &artifact_info(&opts))).expect("write");
            let x = incept_compiler::to_runtime(&input).expect("input");
            for threads in [1, 2] {
                let loaded = Model::load(&file, &RunOptions { threads }).unwrap_or_else(|e| panic!("{name}: {e}"));
                let out = loaded.run(std::slice::from_ref(&x)).expect("run");
                let out = incept_compiler::from_runtime(&out[0]).expect("output");
                check(&format!("{name} JIT ({cpu:?}, artifact, {threads} threads)"), &out, &want, step);
            }
            let direct = compiled.run(std::slice::from_ref(&x)).expect("run");
            let direct = incept_compiler::from_runtime(&direct[0]).expect("output");
            check(&format!("{name} JIT ({cpu:?})"), &direct, &want, step);
            if form == "qop" {
                assert_eq!(direct.bytes(), want.bytes(), "{name} ({cpu:?}): the JIT differs from ONNX Runtime");
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The quantized ops print and parse back to the same graph, which computes the same bits.
#[test]
fn quantized_graphs_print_and_parse_back() {
    use incept_ir::text::{self, ConstPool};
    for (model, form) in MODELS.iter().flat_map(|m| FORMS.iter().map(move |f| (*m, *f))) {
        let name = format!("{model}.{form}");
        let input = npy::read(&fixtures_dir().join(format!("{model}.input.npy"))).expect("input");
        let g = onnx::load_for_inputs(
            &quant_dir().join(format!("{name}.onnx")),
            &Default::default(),
            &[(None, input.clone())],
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let printed = text::print(&g).expect("print");
        let parsed = text::parse_with(&printed, &ConstPool::from_graph(&g)).unwrap_or_else(|e| panic!("{name}: {e}"));
        verify::verify(&parsed).unwrap_or_else(|e| panic!("{name}: parsed graph: {e}"));
        assert_eq!(printed, text::print(&parsed).expect("print"), "{name}: print -> parse -> print differs");
        let a = interp::run(&g, std::slice::from_ref(&input)).expect("run original");
        let b = interp::run(&parsed, &[input]).expect("run parsed");
        assert_eq!(a[0].bytes(), b[0].bytes(), "{name}: parsed graph computes something else");
    }
}

/// fuse-qdq turns every QDQ conv and add of the fixtures into QLinearConv and QLinearAdd, and the
/// fused graph stays within one output step of the literal one (the interpreter on both).
#[test]
fn qdq_groups_become_integer_ops() {
    use incept_compiler::passes::{PassManager, PassOptions, Pipeline};
    let count = |g: &incept_ir::Graph, name: &str| g.node_ids().filter(|&id| g.node(id).op.name() == name).count();
    for (model, form) in MODELS.iter().flat_map(|m| ["qdq", "qdq_pc"].map(move |f| (*m, f))) {
        let name = format!("{model}.{form}");
        let input = npy::read(&fixtures_dir().join(format!("{model}.input.npy"))).expect("input");
        let g = onnx::load_for_inputs(
            &quant_dir().join(format!("{name}.onnx")),
            &Default::default(),
            &[(None, input.clone())],
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut fused = g.clone();
        let only = Pipeline::Explicit(vec!["fuse-qdq".into(), "dead-code".into()]);
        // In f32 the pass leaves the literal QDQ graph alone; --precision int8 turns it on.
        let mut literal = g.clone();
        PassManager::new(&only, &[], PassOptions::default()).expect("passes").run(&mut literal).expect("run");
        assert_eq!(count(&literal, "Conv"), count(&g, "Conv"), "{name}: fused without int8");
        let int8 = PassOptions { fuse_qdq: true, ..PassOptions::default() };
        PassManager::new(&only, &[], int8).expect("passes").run(&mut fused).expect("run");
        let (convs, adds) = (count(&g, "Conv"), count(&g, "Add"));
        assert!(convs > 0, "{name}: no conv to fuse");
        assert_eq!(count(&fused, "Conv"), 0, "{name}: a conv was left in f32");
        assert_eq!(count(&fused, "QLinearConv"), convs, "{name}");
        assert_eq!(count(&fused, "QLinearAdd") + count(&fused, "Add"), adds, "{name}");
        let literal = interp::run(&g, std::slice::from_ref(&input)).expect("run literal");
        let integer = interp::run(&fused, &[input]).expect("run fused");
        check(&format!("{name} fused vs literal"), &integer[0], &literal[0], output_step(&g));
    }
}

/// The step rule can fail: an output moved by two steps is caught.
#[test]
fn two_steps_apart_is_caught() {
    let want = Tensor::from_vec(vec![3], vec![0.0f32, 2.0 / 255.0, 1.0 / 255.0]);
    let got = Tensor::from_vec(vec![3], vec![2.0f32 / 255.0, 2.0 / 255.0, 1.0 / 255.0]);
    let (worst, _) = steps_apart(&got, &want, 1.0 / 255.0);
    assert!(worst > 1.5, "{worst}");
    let result = std::panic::catch_unwind(|| check("mutated", &got, &want, 1.0 / 255.0));
    assert!(result.is_err(), "two steps apart passed the check");
}
