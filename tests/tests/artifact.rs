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

/// In f32, and in bf16 where this CPU runs a bf16 tier.
#[test]
fn loaded_artifacts_match_the_compiled_plan_bit_for_bit() {
    let dir = std::env::temp_dir().join(format!("incept-artifact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut precisions = vec![incept_compiler::Precision::F32];
    if incept_compiler::Cpu::Native.bf16_tier().is_some() {
        precisions.push(incept_compiler::Precision::Bf16);
    } else {
        println!("bf16 skipped: this CPU runs no bf16 tier");
    }
    for (name, precision) in FIXTURES.iter().flat_map(|n| precisions.iter().map(move |&p| (*n, p))) {
        let input = incept_ir::npy::read(&fixtures_dir().join(format!("{name}.input.npy"))).expect("input");
        let mut import = incept_ir::onnx::ImportOptions::default();
        import.input_shapes.insert("input".into(), input.shape().to_vec());
        let opts = CompileOptions { import, threads: 1, precision, ..Default::default() };
        let path = fixtures_dir().join(format!("{name}.onnx"));
        let (model, _) = incept_compiler::compile_with_report(path.as_path(), &opts).expect("compile");
        let want = model.run(&[to_runtime(&input)]).expect("run");
        let file = dir.join(format!("{name}.{}.incept", precision.name()));
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

/// A dynamic-batch model compiled for batch 8 (`--dim N=8`) runs batch 8 from its artifact, each
/// image as ONNX Runtime computes it alone, and refuses batch 1 naming the batch it was built for.
#[test]
fn an_artifact_compiled_for_batch_8_runs_batch_8() {
    let name = "torch_resnet_mini";
    let one = incept_runtime::npy::read(fixtures_dir().join(format!("{name}.input.npy"))).expect("input");
    let want = incept_runtime::npy::read(fixtures_dir().join(format!("{name}.ort_output.npy"))).expect("ORT");
    let mut import = incept_ir::onnx::ImportOptions::default();
    import.dims.insert("N".into(), 8);
    let opts = CompileOptions { import, threads: 2, ..Default::default() };
    let model = incept_compiler::compile(&fixtures_dir().join(format!("{name}.onnx")), &opts).expect("compile");
    let dir = std::env::temp_dir().join(format!("incept-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("b8.incept");
    model.save(&file, &artifact_info(&opts)).expect("save");
    let loaded = Model::load(&file, &RunOptions { threads: 2 }).expect("load");
    assert_eq!(loaded.plan().inputs[0].shape, [8, 3, 64, 64]);
    // Eight different images: the fixture's, scaled per image (a row mix-up shows).
    let x = one.as_f32().expect("f32");
    let batch: Vec<f32> = (0..8).flat_map(|b| x.iter().map(move |v| v * (1.0 + b as f32 / 8.0))).collect();
    let out = loaded.run(&[incept_runtime::Tensor::from_f32(&[8, 3, 64, 64], &batch).expect("batch")]).expect("run");
    let got = out[0].as_f32().expect("f32");
    assert_eq!(out[0].shape(), [8, 10]);
    // Image 0 is the fixture: ONNX Runtime's output. Every image: the batch-1 plan's output.
    let scale = want.as_f32().expect("f32").iter().fold(1f32, |m, v| m.max(v.abs()));
    for (g, w) in got[..10].iter().zip(want.as_f32().expect("f32")) {
        assert!((g - w).abs() <= 1e-4 * scale, "image 0: {g} vs ORT {w}");
    }
    let mut import = incept_ir::onnx::ImportOptions::default();
    import.dims.insert("N".into(), 1);
    let single = incept_compiler::compile(
        &fixtures_dir().join(format!("{name}.onnx")),
        &CompileOptions { import, ..opts.clone() },
    )
    .expect("compile batch 1");
    for b in 0..8 {
        let img = &batch[b * 3 * 64 * 64..(b + 1) * 3 * 64 * 64];
        let alone = single.run(&[incept_runtime::Tensor::from_f32(&[1, 3, 64, 64], img).expect("image")]).expect("run");
        for (g, w) in got[b * 10..(b + 1) * 10].iter().zip(alone[0].as_f32().expect("f32")) {
            assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "image {b}: batch {g} vs alone {w}");
        }
    }
    let err = loaded.run(&[one]).expect_err("batch 1");
    assert!(err.to_string().contains("compiled for batch size 8; compile it again for batch 1"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
