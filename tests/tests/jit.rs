//! The JIT backend end to end: compiled models against the reference interpreter and ONNX Runtime.

use incept_compiler::{CompileOptions, compile_with_report};
use incept_ir::onnx::ImportOptions;
use incept_ir::{Tensor, npy};
use incept_tests::{FIXTURES, fixtures_dir, max_rel_err};

/// An IR tensor as a runtime tensor.
pub fn to_runtime(t: &Tensor) -> incept_runtime::Tensor {
    let d = match t.dtype() {
        incept_ir::DType::F32 => incept_runtime::DType::F32,
        incept_ir::DType::I64 => incept_runtime::DType::I64,
        other => panic!("test inputs of {other}"),
    };
    incept_runtime::Tensor::from_bytes(d, t.shape(), t.bytes()).expect("tensor")
}

pub fn from_runtime(t: &incept_runtime::Tensor) -> Tensor {
    Tensor::from_vec(t.shape().to_vec(), t.to_f32_vec().expect("f32 output"))
}

#[test]
fn fixtures_match_onnx_runtime() {
    for name in FIXTURES {
        let dir = fixtures_dir();
        let input = npy::read(&dir.join(format!("{name}.input.npy"))).expect("input");
        let want = npy::read(&dir.join(format!("{name}.ort_output.npy"))).expect("ort");
        let mut import = ImportOptions::default();
        import.input_shapes.insert("input".into(), input.shape().to_vec());
        for threads in [1, 2] {
            let opts = CompileOptions { import: import.clone(), threads, ..Default::default() };
            let (model, report) = compile_with_report(dir.join(format!("{name}.onnx")).as_path(), &opts)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let out = model.run(&[to_runtime(&input)]).unwrap_or_else(|e| panic!("{name}: {e}"));
            let err = max_rel_err(&from_runtime(&out[0]), &want).expect("compare");
            println!(
                "{name} ({threads} threads): rel err {err:.2e}, {} kernels, {} steps, arena {} (bound {})",
                report.kernels, report.steps, report.arena_bytes, report.arena_lower_bound
            );
            assert!(err <= 1e-4, "{name}: {err:e}");
        }
    }
}
