//! `.incept` artifacts end to end: a plan compiled here, written, mapped back by the runtime
//! alone, gives the same bits as the plan it came from, at one and two threads; damaged files
//! are refused with the error that names the damage.

use incept_compiler::{CompileOptions, artifact_info};
use incept_runtime::artifact::{ArtifactError, encode};
use incept_runtime::buffer::Weights;
use incept_runtime::{Model, RunError, RunOptions};
use incept_tests::{FIXTURES, fixtures_dir};

fn to_runtime(t: &incept_ir::Tensor) -> incept_runtime::Tensor {
    incept_compiler::to_runtime(t).expect("tensor")
}

#[test]
fn loaded_artifacts_match_the_compiled_plan_bit_for_bit() {
    let dir = std::env::temp_dir().join(format!("incept-artifact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for name in FIXTURES {
        let input = incept_ir::npy::read(&fixtures_dir().join(format!("{name}.input.npy"))).expect("input");
        let mut import = incept_ir::onnx::ImportOptions::default();
        import.input_shapes.insert("input".into(), input.shape().to_vec());
        let opts = CompileOptions { import, threads: 1, ..Default::default() };
        let path = fixtures_dir().join(format!("{name}.onnx"));
        let (model, _) = incept_compiler::compile_with_report(path.as_path(), &opts).expect("compile");
        let want = model.run(&[to_runtime(&input)]).expect("run");
        let file = dir.join(format!("{name}.incept"));
        std::fs::write(&file, encode(model.plan(), &artifact_info(&opts))).expect("write");
        for threads in [1, 2] {
            let loaded = Model::load(&file, &RunOptions { threads }).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(matches!(loaded.plan().weights, Weights::Mapped { .. }), "{name}: weights copied, not mapped");
            assert_eq!(loaded.plan().features, model.plan().features);
            let got = loaded.run(&[to_runtime(&input)]).expect("run");
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.bytes(), w.bytes(), "{name} at {threads} threads: the loaded plan's output differs");
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn damaged_artifacts_are_refused() {
    let name = FIXTURES[0];
    let input = incept_ir::npy::read(&fixtures_dir().join(format!("{name}.input.npy"))).expect("input");
    let mut import = incept_ir::onnx::ImportOptions::default();
    import.input_shapes.insert("input".into(), input.shape().to_vec());
    let opts = CompileOptions { import, threads: 1, ..Default::default() };
    let path = fixtures_dir().join(format!("{name}.onnx"));
    let (model, _) = incept_compiler::compile_with_report(path.as_path(), &opts).expect("compile");
    let bytes = encode(model.plan(), &artifact_info(&opts));
    let dir = std::env::temp_dir().join(format!("incept-damaged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("m.incept");
    let refuse = |b: &[u8]| -> RunError {
        std::fs::write(&file, b).expect("write");
        Model::load(&file, &RunOptions::default()).err().expect("refused")
    };
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(refuse(&flipped), RunError::Artifact(ArtifactError::Corrupted));
    assert!(matches!(refuse(&bytes[..bytes.len() / 2]), RunError::Artifact(ArtifactError::Truncated { .. })));
    assert_eq!(refuse(b"\x7fELF not an artifact"), RunError::Artifact(ArtifactError::NotIncept));
    let err = Model::load(dir.join("missing.incept"), &RunOptions::default()).err().expect("refused");
    assert!(err.to_string().contains("missing.incept"), "{err}");
    let err = Model::load(&dir, &RunOptions::default()).err().expect("refused");
    assert!(err.to_string().contains("directory"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `compile` takes a model as a `&str` path, a `PathBuf`, a `String` or bytes, as an app would
/// have it; all give the same plan.
#[test]
fn compile_takes_paths_and_bytes_as_apps_have_them() {
    let path = fixtures_dir().join("mini_inception.onnx");
    let opts = CompileOptions { threads: 1, ..Default::default() };
    let text = path.display().to_string();
    let sizes = [
        incept_compiler::compile(text.as_str(), &opts).expect("&str").plan().code.len(),
        incept_compiler::compile(&path, &opts).expect("&PathBuf").plan().code.len(),
        incept_compiler::compile(&text, &opts).expect("&String").plan().code.len(),
        incept_compiler::compile(std::fs::read(&path).expect("read"), &opts).expect("Vec<u8>").plan().code.len(),
    ];
    assert!(sizes.iter().all(|&s| s == sizes[0] && s > 0), "{sizes:?}");
}

/// The artifact stored in the fixtures (what the C API and runtime-only example tests load)
/// still loads with this runtime and still computes what ONNX Runtime does. When the kernel ABI
/// or the format changes, regenerate it with
/// `incept compile tests/fixtures/mini_resnet.onnx --cpu baseline -o tests/fixtures/mini_resnet.baseline.incept`.
#[test]
fn the_stored_fixture_artifact_still_matches_onnx_runtime() {
    let path = fixtures_dir().join("mini_resnet.baseline.incept");
    let model = Model::load(&path, &RunOptions { threads: 1 }).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let input = incept_runtime::npy::read(fixtures_dir().join("mini_resnet.input.npy")).expect("input");
    let want = incept_ir::npy::read(&fixtures_dir().join("mini_resnet.ort_output.npy")).expect("ORT output");
    let got = model.run(&[input]).expect("run");
    let got = incept_ir::Tensor::from(&got[0]);
    let err = incept_tests::max_rel_err(&got, &want).expect("compare");
    assert!(err <= 1e-4, "stored artifact: relative error {err:.2e} against ONNX Runtime");
    assert_eq!(model.plan().features, ["sse3", "ssse3", "sse4.1", "sse4.2", "popcnt"].map(String::from).to_vec());
}

#[test]
fn saving_where_nothing_can_be_written_says_write() {
    let opts = CompileOptions::default();
    let model = incept_compiler::compile(&fixtures_dir().join("mini_resnet.onnx"), &opts).expect("compile");
    let err = model.save("/nonexistent/dir/m.incept", &artifact_info(&opts)).expect_err("no such dir");
    assert!(err.to_string().starts_with("cannot write '/nonexistent/dir/m.incept'"), "{err}");
}
