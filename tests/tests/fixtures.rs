//! The real-exporter fixture models: import, verify, print/parse round trip, and the reference
//! interpreter against the ONNX Runtime output stored beside each model.

use incept_ir::text::{self, ConstPool};
use incept_ir::{interp, npy, onnx, verify};
use incept_tests::{FIXTURES, fixtures_dir, max_rel_err};

fn load(name: &str) -> incept_ir::Graph {
    let dir = fixtures_dir();
    let input = npy::read(&dir.join(format!("{name}.input.npy"))).expect("input");
    onnx::load_for_inputs(&dir.join(format!("{name}.onnx")), &Default::default(), &[(None, input)])
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn reference_interpreter_matches_onnx_runtime() {
    let dir = fixtures_dir();
    for name in FIXTURES {
        let g = load(name);
        verify::verify(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
        let input = npy::read(&dir.join(format!("{name}.input.npy"))).expect("input");
        let want = npy::read(&dir.join(format!("{name}.ort_output.npy"))).expect("ORT output");
        let start = std::time::Instant::now();
        let got = interp::run(&g, &[input]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let err = max_rel_err(&got[0], &want).unwrap_or_else(|e| panic!("{name}: {e}"));
        println!("{name}: relative error {err:.2e} vs ONNX Runtime, reference interpreter {ms:.1} ms");
        assert!(err <= 1e-4, "{name}: relative error {err:e} exceeds 1e-4");
    }
}

#[test]
fn symbolic_batch_stays_symbolic_until_bound() {
    let g = onnx::load(&fixtures_dir().join("torch_resnet_mini.onnx"), &Default::default()).expect("import");
    let out = g.ty(g.outputs()[0]);
    assert_eq!(incept_ir::format::format_type(out), "f32[N,10]");
    let mut bound = g.clone();
    bound.bind_dims(&[("N".to_string(), 3)].into_iter().collect()).expect("bind");
    assert_eq!(incept_ir::format::format_type(bound.ty(bound.outputs()[0])), "f32[3,10]");
    verify::verify(&bound).expect("verify after binding");
}

#[test]
fn print_parse_print_is_identity() {
    for name in FIXTURES {
        let g = load(name);
        let printed = text::print(&g).expect("print");
        let parsed = text::parse_with(&printed, &ConstPool::from_graph(&g)).unwrap_or_else(|e| panic!("{name}: {e}"));
        verify::verify(&parsed).unwrap_or_else(|e| panic!("{name}: parsed graph: {e}"));
        let again = text::print(&parsed).expect("print");
        assert_eq!(printed, again, "{name}: print -> parse -> print differs");
        // The parsed graph means the same: identical outputs, bit for bit.
        let input = npy::read(&fixtures_dir().join(format!("{name}.input.npy"))).expect("input");
        let a = interp::run(&g, std::slice::from_ref(&input)).expect("run original");
        let b = interp::run(&parsed, &[input]).expect("run parsed");
        assert_eq!(a[0].bytes(), b[0].bytes(), "{name}: parsed graph computes something else");
    }
}
