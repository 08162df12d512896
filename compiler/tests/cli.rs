//! The `incept` binary end to end: output formats, the reference run, and clean errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use incept_ir::npy;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn incept(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_incept")).args(args).output().expect("run incept")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a command that must fail cleanly; returns its stderr.
fn fails(args: &[&str]) -> String {
    let o = incept(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?} should fail with exit code 1: {err}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{args:?}: {err}");
    err
}

fn model(name: &str) -> String {
    fixtures().join(format!("{name}.onnx")).display().to_string()
}

/// A fresh temporary folder for one test.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("incept-cli-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes an ONNX model (opset 17, plus `domain` at version 1 if not empty) from input `x` to
/// output `y`, both of element type `elem` (ONNX code) and shape [1, 4]; returns its path.
fn write_model(
    dir: &Path,
    file: &str,
    nodes: Vec<incept_ir::onnx::proto::NodeProto>,
    elem: i32,
    domain: &str,
) -> String {
    write_model_dims(dir, file, nodes, elem, domain, &[1, 4])
}

/// Like [`write_model`], with `x` and `y` of shape `dims` (a negative dim has no size or name).
fn write_model_dims(
    dir: &Path,
    file: &str,
    nodes: Vec<incept_ir::onnx::proto::NodeProto>,
    elem: i32,
    domain: &str,
    dims: &[i64],
) -> String {
    use incept_ir::onnx::proto::*;
    use prost::Message;
    let value = |name: &str| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TypeTensor {
                elem_type: elem,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: (d >= 0).then_some(DimensionValue::DimValue(d)),
                            denotation: String::new(),
                        })
                        .collect(),
                }),
            })),
            denotation: String::new(),
        }),
        doc_string: String::new(),
    };
    let mut opset_import = vec![OperatorSetIdProto { domain: String::new(), version: 17 }];
    if !domain.is_empty() {
        opset_import.push(OperatorSetIdProto { domain: domain.into(), version: 1 });
    }
    let m = ModelProto {
        ir_version: 8,
        opset_import,
        graph: Some(GraphProto {
            node: nodes,
            name: "g".into(),
            input: vec![value("x")],
            output: vec![value("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = dir.join(file);
    std::fs::write(&path, m.encode_to_vec()).expect("write model");
    path.display().to_string()
}

fn node(op: &str, domain: &str, name: &str, input: &str, output: &str) -> incept_ir::onnx::proto::NodeProto {
    incept_ir::onnx::proto::NodeProto {
        op_type: op.into(),
        domain: domain.into(),
        name: name.into(),
        input: vec![input.into()],
        output: vec![output.into()],
        ..Default::default()
    }
}

/// A model of one node `n` of type `op` from `x` to `y`.
fn one_node_model(dir: &Path, file: &str, op: &str, domain: &str, elem: i32) -> String {
    write_model(dir, file, vec![node(op, domain, "n", "x", "y")], elem, domain)
}

#[test]
fn inspect_prints_ir_stats_and_dot() {
    let o = incept(&["inspect", &model("mini_inception")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ir = stdout(&o);
    assert!(ir.starts_with("graph \"tf2onnx\" {") && ir.contains("Concat(") && ir.contains("\n}\n; pass"), "{ir}");

    let o = incept(&["inspect", &model("mini_inception"), "--stats"]);
    let s = stdout(&o);
    assert!(o.status.success());
    assert!(
        s.contains("MACs: 38.21 M (38210328)") && s.contains("parameters:") && s.contains("largest activation:"),
        "{s}"
    );
    assert!(s.lines().any(|l| l.starts_with("Conv") && l.contains("24")), "{s}");

    let o = incept(&["inspect", &model("mini_xception"), "--format", "dot"]);
    assert!(o.status.success() && stdout(&o).starts_with("digraph"));
}

#[test]
fn symbolic_dims_bind_from_flags() {
    let o = incept(&["inspect", &model("torch_resnet_mini")]);
    assert!(stdout(&o).contains("input %input : f32[N,3,64,64]"));
    let o = incept(&["inspect", &model("torch_resnet_mini"), "--dim", "N=2"]);
    assert!(stdout(&o).contains("input %input : f32[2,3,64,64]"), "{}", stderr(&o));
    let o = incept(&["inspect", &model("torch_resnet_mini"), "--shape", "input=4,3,64,64", "--stats"]);
    assert!(stdout(&o).contains("output: output f32[4,10]"), "{}", stderr(&o));
    let e = fails(&["inspect", &model("torch_resnet_mini"), "--shape", "input=4,3,32,64"]);
    assert!(e.contains("input") && e.contains("fixed shape"), "{e}");
    let e = fails(&["inspect", &model("torch_resnet_mini"), "--shape", "nope=1"]);
    assert!(e.contains("nope") && e.contains("no such graph input"), "{e}");
    let e = fails(&["inspect", &model("torch_resnet_mini"), "--dim", "N"]);
    assert!(e.contains("--dim expects KEY=VALUE"), "{e}");
}

#[test]
fn run_reference_writes_npy_matching_onnx_runtime() {
    let dir = std::env::temp_dir().join(format!("incept-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let out = dir.join("out.npy");
    let input = fixtures().join("torch_separable_mini.input.npy");
    let o = incept(&[
        "run",
        "--reference",
        &model("torch_separable_mini"),
        "-i",
        input.to_str().unwrap_or_default(),
        "-o",
        out.to_str().unwrap_or_default(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = npy::read(&out).expect("output npy");
    let want = npy::read(&fixtures().join("torch_separable_mini.ort_output.npy")).expect("ort");
    let (g, w) = (got.view::<f32>().expect("f32"), want.view::<f32>().expect("f32"));
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(g.iter().zip(w.iter()).all(|(a, b)| (a - b).abs() <= 1e-4 * scale));

    // Without -o the outputs are summarised, with the top classes.
    let o =
        incept(&["run", "--reference", &model("torch_separable_mini"), "-i", &format!("input={}", input.display())]);
    assert!(stdout(&o).contains("output f32[1, 10]") && stdout(&o).contains("top-5"), "{}", stdout(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_reads_onnx_test_data_folders() {
    let case =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance/data/node/test_conv_with_strides_padding");
    let o = incept(&[
        "run",
        "--reference",
        case.join("model.onnx").to_str().unwrap_or_default(),
        "-i",
        case.join("test_data_set_0").to_str().unwrap_or_default(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("max abs diff 0.000e0"), "{}", stdout(&o));
}

#[test]
fn errors_are_clean() {
    let e = fails(&["inspect", "/no/such/model.onnx"]);
    assert!(e.contains("/no/such/model.onnx"), "{e}");
    let e = fails(&["inspect", &fixtures().join("mini_resnet.input.npy").display().to_string()]);
    assert!(e.contains("protobuf") || e.contains("ONNX"), "{e}");
    let input = fixtures().join("mini_resnet.input.npy").display().to_string();
    // Without --reference the model is compiled and run.
    let o = incept(&["run", &model("mini_resnet"), "-i", &input, "--threads", "1"]);
    assert!(o.status.success() && stderr(&o).contains("compiled in") && stdout(&o).contains("top-5"), "{}", stderr(&o));
    let e = fails(&["run", "--reference", &model("mini_inception"), "-i", &input]);
    assert!(e.contains("has shape [1, 3, 64, 64], but input 'input'") && e.contains("f32[1,3,75,75]"), "{e}");
    let e = fails(&["run", "--reference", &model("mini_resnet")]);
    assert!(e.contains("1 input(s)") && e.contains("0 given"), "{e}");
    let e = fails(&["run", "--reference", &model("mini_resnet"), "-i", "/no/such.npy"]);
    assert!(e.contains("/no/such.npy"), "{e}");
}

#[test]
fn inspect_memory_prints_the_arena_plan() {
    let o = incept(&["inspect", &model("mini_resnet"), "--memory"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    // A header, one row per buffer, residual adds reusing their input in place, and the summary.
    assert!(s.starts_with("      offset        bytes  steps       buffer\n"), "{s}");
    assert!(s.contains("(in place of "), "{s}");
    let last = s.lines().last().unwrap_or_default();
    assert!(last.starts_with("arena ") && last.contains("lower bound") && last.contains("ratio 1.0"), "{s}");
}

#[test]
fn peak_reports_gflops() {
    let o = incept(&["peak", "--iterations", "100000", "--runs", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("f32x4 FMA peak, one core: "), "{}", stdout(&o));
    assert!(stdout(&o).contains("core to core: a cache line's round trip"), "{}", stdout(&o));
    assert!(fails(&["peak", "--runs", "0"]).contains("must be positive"));
    // Just the round trip: a positive number of nanoseconds.
    let o = stdout(&incept(&["peak", "--core-to-core", "--runs", "3"]));
    let ns: f64 = o
        .split("threads ")
        .nth(1)
        .and_then(|r| r.split(" ns").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no round trip in {o}"));
    assert!(ns > 0.0 && o.lines().count() == 1, "{o}");
}

/// The README's main-job command (`cargo run ... -- ARGS`) works and prints the top classes.
#[test]
fn readme_main_job_runs() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let section = &readme[readme.find("## The main job").expect("a main job section")..];
    let line = section.lines().find(|l| l.starts_with("    ")).expect("an indented command").trim();
    let args = line.strip_prefix("cargo run --release -p incept-compiler -- ").expect("cargo run of incept");
    let o = Command::new(env!("CARGO_BIN_EXE_incept"))
        .args(args.split_whitespace())
        .current_dir(&root)
        .output()
        .expect("run incept");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("top-5: ") && stderr(&o).contains("compiled in"), "{}", stdout(&o));
}

#[test]
fn help_explains_the_commands() {
    let o = incept(&["--help"]);
    let h = stdout(&o);
    assert!(o.status.success() && h.contains("inspect") && h.contains("run") && h.contains("ops"), "{h}");
    let o = incept(&["run", "--help"]);
    assert!(stdout(&o).contains("--reference") && stdout(&o).contains("test data folder"));
}

#[test]
fn optimisation_flags() {
    let m = model("torch_separable_mini");
    // -O2 is the default: BatchNorm folded, Clip fused into the conv epilogues.
    let o = incept(&["inspect", &m]);
    let ir = stdout(&o);
    assert!(
        o.status.success() && !ir.contains("BatchNormalization(") && ir.contains("epilogue(clip(0.0, 6.0))"),
        "{ir}"
    );
    assert!(ir.contains("; fold-batchnorm") && ir.contains("; fuse-epilogue"), "{ir}");
    // -O0 leaves the imported graph; -O1 folds but does not fuse.
    let o0 = stdout(&incept(&["inspect", &m, "-O0"]));
    assert!(o0.contains("BatchNormalization(") && !o0.contains("; pass"));
    let o1 = stdout(&incept(&["inspect", &m, "-O1"]));
    assert!(!o1.contains("BatchNormalization(") && !o1.contains("epilogue(") && o1.contains("Clip("));
    // An explicit list, and a disabled pass.
    let p = stdout(&incept(&["inspect", &m, "--passes", "fold-batchnorm,dead-code"]));
    assert!(!p.contains("BatchNormalization(") && p.contains("Clip(") && !p.contains("; cse"));
    let d =
        stdout(&incept(&["inspect", &m, "--disable-pass", "fold-batchnorm", "--disable-pass", "batchnorm-to-affine"]));
    assert!(d.contains("BatchNormalization("), "{d}");
    let e = fails(&["inspect", &m, "--passes", "nope"]);
    assert!(e.contains("unknown pass 'nope'") && e.contains("fold-batchnorm"), "{e}");
    // A malformed command line is a usage error (exit code 2, clap's convention).
    let o = incept(&["inspect", &m, "-O7"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("7 is not in 0..=2"), "{}", stderr(&o));
    // --print-after and --diff.
    let pa = stdout(&incept(&["inspect", &m, "--print-after", "fold-batchnorm"]));
    assert!(pa.contains("; IR after fold-batchnorm\ngraph"), "{pa}");
    let diff = stdout(&incept(&["inspect", &m, "--diff"]));
    assert!(
        diff.contains("--- before fold-batchnorm")
            && diff.contains("+++ after fold-batchnorm")
            && diff.contains("-  %"),
        "{diff}"
    );
}

#[test]
fn run_applies_the_pipeline_and_reports_factorisation() {
    let m = model("torch_inception_mini");
    let input = fixtures().join("torch_inception_mini.input.npy").display().to_string();
    let a = stdout(&incept(&["run", "--reference", &m, "-i", &input, "-O0"]));
    let b = stdout(&incept(&["run", "--reference", &m, "-i", &input, "-O2"]));
    assert!(a.contains("top-5") && b.contains("top-5"));
    let top =
        |s: &str| s.lines().find(|l| l.contains("top-5")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string());
    assert_eq!(top(&a), top(&b), "-O0 and -O2 disagree on the best class");
    let o = incept(&["run", "--reference", &m, "-i", &input, "--factorize-report"]);
    assert!(o.status.success() && stderr(&o).contains("; factorisation"), "{}", stderr(&o));
    let e = fails(&["run", "--reference", &m, "-i", &input, "--factorize-tolerance", "2"]);
    assert!(e.contains("between 0 and 1"), "{e}");
}

#[test]
fn check_passes_on_every_fixture() {
    for name in [
        "mini_resnet",
        "mini_inception",
        "mini_xception",
        "mini_mobilenetv2",
        "torch_resnet_mini",
        "torch_inception_mini",
        "torch_separable_mini",
        "mini_inception_resnet",
    ] {
        // The torch models have a dynamic batch: it binds to the given input.
        let input = fixtures().join(format!("{name}.input.npy")).display().to_string();
        let o = incept(&["check", &model(name), "-i", &input, "--threads", "2"]);
        let s = stdout(&o);
        assert!(o.status.success(), "{name}: {s}{}", stderr(&o));
        assert!(s.contains("output '") && s.contains("  ok\n") && s.contains("PASS"), "{name}: {s}");
    }
    // Random inputs say which seed they came from.
    let o = incept(&["check", &model("mini_resnet"), "--seed", "7"]);
    assert!(o.status.success() && stdout(&o).starts_with("inputs: random, seed 7 ('input' f32[1, 3, 64, 64]"));
}

/// A deliberately broken kernel (a test-only switch adds 0.25 to one node's output) is caught,
/// and the node named, wherever it sits: early, in a residual block, on a branch into a concat,
/// the last conv.
#[test]
fn check_names_a_broken_node() {
    for (name, node) in [
        ("mini_resnet", "Conv__1"),
        ("mini_resnet", "mini_resnet_1/block2_2_conv_1/BiasAdd"),
        ("mini_inception", "Conv__17"),
        ("mini_inception", "Conv__47"),
        ("mini_xception", "mini_xception_1/middle_sepconv2_1/separable_conv2d/depthwise"),
        ("mini_mobilenetv2", "Conv__52"),
    ] {
        let o = incept(&["check", &model(name), "--inject-fault", &format!("corrupt={node}")]);
        let s = stdout(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {s}");
        assert!(s.contains("MISMATCH") && s.contains("FAIL"), "{name}: {s}");
        let first = s.lines().find(|l| l.starts_with("  node '")).unwrap_or_default();
        assert!(first.starts_with(&format!("  node '{node}' (")), "{name}: blamed {first}\n{s}");
        assert!(s.contains("kernel: Fault ("), "{name}: {s}");
        assert!(stderr(&o).contains("disagrees with the reference interpreter"));
    }
    // The operand-numbering bug of issue 7, reinjected: the bias-free residual conv is named,
    // with its fused epilogue.
    let o = incept(&["check", &model("mini_inception_resnet"), "--inject-fault", "epilogue-operand-as-bias"]);
    let s = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{s}");
    assert!(s.contains("node 'mini_inception_resnet_1/block35_scale_1/mul' (Conv)"), "{s}");
    assert!(s.contains("epilogue(add %"), "{s}");
    // A fault aimed at no node is an error, not a silent pass.
    let err = fails(&["check", &model("mini_resnet"), "--inject-fault", "corrupt=nope"]);
    assert!(err.contains("no node named 'nope'"), "{err}");
}

/// Issue 7's repro through `incept run` as a user runs it: Conv without bias, Add of a residual
/// (full, per channel, per position), Relu, at -O2 on 1 and 2 threads, against ONNX Runtime.
#[test]
fn run_matches_onnx_runtime_on_the_epilogue_repros() {
    let dir = fixtures().join("epilogue");
    for name in ["conv1x1", "conv3x3_winograd_batch2", "depthwise_shared", "gemm"] {
        let m = dir.join(format!("{name}.onnx")).display().to_string();
        let g = incept_ir::onnx::load(Path::new(&m), &Default::default()).expect("import");
        let mut args = vec!["run".to_string(), m.clone()];
        for v in g.input_values() {
            let input = g.value(v).name.clone();
            args.push("-i".into());
            args.push(format!("{input}={}", dir.join(format!("{name}.{input}.npy")).display()));
        }
        for threads in ["1", "2"] {
            let out = std::env::temp_dir().join(format!("incept-repro-{name}-{threads}-{}", std::process::id()));
            std::fs::create_dir_all(&out).expect("temp dir");
            let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
            let out_s = out.display().to_string();
            a.extend(["--threads", threads, "-o", &out_s]);
            let o = incept(&a);
            assert!(o.status.success(), "{name}: {}", stderr(&o));
            for (k, &v) in g.outputs().iter().enumerate() {
                let got = npy::read(&out.join(format!("{}.npy", g.value(v).name))).expect("output");
                let want = npy::read(&dir.join(format!("{name}.ort_output_{k}.npy"))).expect("ORT output");
                let (g, w) = (got.to_f64s().expect("f32"), want.to_f64s().expect("f32"));
                let scale = w.iter().fold(1f64, |m, x| m.max(x.abs()));
                let err = g.iter().zip(&w).fold(0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
                assert!(got.shape() == want.shape() && err <= 1e-4, "{name} output {k} at {threads} threads: {err:e}");
            }
            let _ = std::fs::remove_dir_all(&out);
        }
    }
}

#[test]
fn bench_writes_a_chrome_trace() {
    let path = std::env::temp_dir().join(format!("incept-trace-{}.json", std::process::id()));
    let p = path.display().to_string();
    let o = incept(&["bench", &model("mini_resnet"), "--threads", "2", "--iters", "2", "--warmup", "1", "--trace", &p]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&path).expect("trace written");
    let _ = std::fs::remove_file(&path);
    assert!(text.starts_with("{\"traceEvents\": [") && text.trim_end().ends_with('}'), "{text}");
    // Thread names, then one complete slice per chunk with its kernel, op and node.
    // Which worker picks up chunks is up to the scheduler (on a busy machine one may take them all).
    assert!(text.contains("\"ph\": \"M\"") && text.contains("\"name\": \"worker "), "{text}");
    let slices = text.lines().filter(|l| l.contains("\"ph\": \"X\"")).count();
    assert!(slices >= 10, "{slices} slices");
    assert!(
        text.contains("\"cat\": \"Conv\"") && text.contains("\"node\": \"Conv__1\"") && text.contains("gemm "),
        "{text}"
    );
    // A trace that cannot be written fails before the runs.
    let err = fails(&["bench", &model("mini_resnet"), "--iters", "1", "--trace", "/nonexistent/dir/t.json"]);
    assert!(err.contains("cannot write '/nonexistent/dir/t.json'"), "{err}");
}

/// `compile -o` writes an artifact that `run` and `bench` load instead of compiling: the same
/// output bytes as running the ONNX model; inputs bind by name; damage and misuse are clean
/// errors.
#[test]
fn compiled_artifacts_run_and_bench() {
    let dir = std::env::temp_dir().join(format!("incept-cli-artifact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let art = dir.join("m.incept").display().to_string();
    let input = fixtures().join("mini_resnet.input.npy").display().to_string();
    let o = incept(&["compile", &model("mini_resnet"), "-o", &art, "--threads", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("wrote"), "{}", stdout(&o));
    let (from_onnx, from_art) = (dir.join("a.npy"), dir.join("b.npy"));
    let o =
        incept(&["run", &model("mini_resnet"), "-i", &input, "--threads", "1", "-o", &from_onnx.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let named = format!("input={input}");
    let o = incept(&["run", &art, "-i", &named, "--threads", "1", "-o", &from_art.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("loaded in"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&from_onnx).expect("a"), std::fs::read(&from_art).expect("b"), "artifact output differs");
    let o = incept(&["inspect", &art]);
    let text = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    for want in
        ["format: 2.0", "written by: incept", "CPU features: sse3", "inputs:\n  input : f32[", "kernels:", "steps:"]
    {
        assert!(text.contains(want), "inspect of an artifact lacks '{want}':\n{text}");
    }
    let o = incept(&["bench", &art, "--iters", "2", "--warmup", "0", "--threads", "1"]);
    assert!(o.status.success() && stdout(&o).contains("loaded in"), "{}", stderr(&o));
    // check: the artifact against the interpreter on its ONNX model.
    let o = incept(&["check", &art, "--onnx", &model("mini_resnet"), "-i", &input]);
    assert!(
        o.status.success() && stdout(&o).contains("output 'output'") && stdout(&o).contains("PASS"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let e = fails(&["check", &art]);
    assert!(e.contains("give the ONNX model it was compiled from with --onnx"), "{e}");
    let e = fails(&["check", &model("mini_resnet"), "--onnx", &model("mini_resnet")]);
    assert!(e.contains("--onnx is for checking an .incept artifact"), "{e}");
    // A miscompiled artifact (a test-only fault) fails the check; a cut one is compared on its cut.
    let broken = dir.join("broken.incept").display().to_string();
    let o = incept(&["compile", &model("mini_resnet"), "-o", &broken, "--inject-fault", "corrupt=Conv__1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = incept(&["check", &broken, "--onnx", &model("mini_resnet"), "--seed", "3"]);
    assert!(!o.status.success() && stdout(&o).contains("MISMATCH"), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("the artifact disagrees with the reference interpreter"), "{}", stderr(&o));
    let cut = dir.join("cut.incept").display().to_string();
    let pool = "mini_resnet_1/avg_pool_1/Mean:0";
    let o = incept(&["compile", &model("mini_resnet"), "-o", &cut, "--outputs", pool]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = incept(&["check", &cut, "--onnx", &model("mini_resnet")]);
    assert!(o.status.success() && stdout(&o).contains(&format!("output '{pool}'")), "{}{}", stdout(&o), stderr(&o));
    let e = fails(&["run", "--reference", &art, "-i", &input]);
    assert!(e.contains("--reference needs the ONNX model"), "{e}");
    let e = fails(&["run", &art, "-i", &format!("nope={input}")]);
    assert!(e.contains("no input 'nope'") && e.contains("input"), "{e}");
    let mut bytes = std::fs::read(&art).expect("artifact");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&art, &bytes).expect("write");
    let e = fails(&["run", &art, "-i", &input]);
    assert!(e.contains("cannot load the artifact") && e.contains("corrupted"), "{e}");
    let bad = dir.join("bad.incept");
    let e = fails(&["compile", &input, "-o", &bad.display().to_string()]);
    assert!(e.contains("cannot compile"), "{e}");
    assert!(!bad.exists(), "a failed compile left {}", bad.display());
    let e = fails(&["compile", &model("mini_resnet"), "-o", "/no/such/dir/m.incept"]);
    assert!(e.contains("cannot write '/no/such/dir/m.incept'"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn outputs_cut_the_model_on_every_subcommand() {
    const POOL: &str = "mini_resnet_1/avg_pool_1/Mean:0";
    let dir = std::env::temp_dir().join(format!("incept-cli-cut-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let m = model("mini_resnet");
    let input = fixtures().join("mini_resnet.input.npy").display().to_string();
    let want = npy::read(&fixtures().join("mini_resnet.avg_pool.ort_output.npy")).expect("ORT output");
    let close_to_ort = |path: &Path| {
        let got = npy::read(path).expect("output npy");
        assert_eq!(got.shape(), want.shape());
        let (g, w) = (got.view::<f32>().expect("f32"), want.view::<f32>().expect("f32"));
        let err = g.iter().zip(w.iter()).fold(0f32, |e, (a, b)| e.max((a - b).abs()));
        assert!(err <= 1e-4, "max abs error {err} vs ONNX Runtime's cut");
    };

    // inspect: the IR ends at the pool; Gemm and Softmax are gone. The name may be given as
    // inspect prints it.
    let o = incept(&["inspect", &m, "-O0", "--outputs", &format!("%\"{POOL}\"")]);
    let ir = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(ir.contains(&format!("output %\"{POOL}\"")) && !ir.contains("Softmax") && !ir.contains("Gemm"), "{ir}");
    let o = incept(&["inspect", &m, "--stats", "--outputs", POOL]);
    assert!(stdout(&o).contains(&format!("output: {POOL} f32[1,32,1,1]")), "{}", stdout(&o));

    // run, with the reference interpreter and compiled, against ONNX Runtime on the same cut.
    for reference in [true, false] {
        let out = dir.join(format!("pool-{reference}.npy"));
        let mut args = vec!["run", &m, "-i", &input, "--threads", "1", "--outputs", POOL];
        if reference {
            args.push("--reference");
        }
        let out_arg = out.display().to_string();
        args.extend(["-o", &out_arg]);
        let o = incept(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        close_to_ort(&out);
    }

    // Two outputs, comma-separated, in the order given.
    let block1 = "mini_resnet_1/block1_out_1/Relu:0";
    let o = incept(&["run", &m, "-i", &input, "--threads", "1", "--outputs", &format!("{block1},{POOL}")]);
    let s = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    let (b, p) = (s.find(block1).expect("block1 printed"), s.find(POOL).expect("pool printed"));
    assert!(b < p && s.contains("f32[1, 32, 8, 8]") && s.contains("f32[1, 32, 1, 1]"), "{s}");

    // check compares the cut model with the interpreter on the same cut.
    let o = incept(&["check", &m, "-i", &input, "--threads", "1", "--outputs", POOL]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("output '{POOL}'")) && stdout(&o).contains("PASS"), "{}", stdout(&o));

    // bench compiles the cut model.
    let o = incept(&["bench", &m, "--iters", "2", "--warmup", "0", "--threads", "1", "--outputs", POOL]);
    assert!(o.status.success(), "{}", stderr(&o));

    // compile -o writes an artifact whose output is the pool; artifacts refuse --outputs.
    let art = dir.join("pool.incept").display().to_string();
    let o = incept(&["compile", &m, "--outputs", POOL, "-o", &art, "--threads", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = incept(&["inspect", &art]);
    assert!(stdout(&o).contains(&format!("outputs:\n  {POOL} : f32[1,32,1,1]")), "{}", stdout(&o));
    let out = dir.join("from-artifact.npy");
    let o = incept(&["run", &art, "-i", &input, "--threads", "1", "-o", &out.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    close_to_ort(&out);
    for args in [
        vec!["run", &art, "-i", &input, "--outputs", POOL],
        vec!["bench", &art, "--iters", "1", "--outputs", POOL],
        vec!["inspect", &art, "--outputs", POOL],
    ] {
        let e = fails(&args);
        assert!(e.contains("compiled artifact") && e.contains("--outputs applies when compiling"), "{args:?}: {e}");
    }

    // An unknown name lists the closest ones; inputs and constants are refused.
    for sub in ["compile", "run", "bench", "check", "inspect"] {
        let mut args = vec![sub, m.as_str(), "--outputs", "avg_pool_1/Mean"];
        if matches!(sub, "run" | "check") {
            args.extend(["-i", &input]);
        }
        let e = fails(&args);
        assert!(
            e.contains("has no value 'avg_pool_1/Mean'") && e.contains(&format!("closest names are '{POOL}'")),
            "{sub}: {e}"
        );
    }
    let e = fails(&["inspect", &m, "--outputs", "input"]);
    assert!(e.contains("'input' is a graph input"), "{e}");
    let o = incept(&["compile", "--help"]);
    assert!(stdout(&o).contains("--outputs <NAME[,NAME...]>") && stdout(&o).contains("Feature extraction"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn readme_feature_extraction_runs() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let section = &readme[readme.find("## Feature extraction").expect("a feature extraction section")..];
    let line = section.lines().find(|l| l.starts_with("    ")).expect("an indented command").trim();
    let args = line.strip_prefix("cargo run --release -p incept-compiler -- ").expect("cargo run of incept");
    let o = Command::new(env!("CARGO_BIN_EXE_incept"))
        .args(args.split_whitespace())
        .current_dir(&root)
        .output()
        .expect("run incept");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("mini_resnet_1/avg_pool_1/Mean:0 f32[1, 32, 1, 1]"), "{}", stdout(&o));
}

/// Errors blame what is wrong: the data file (with the expected shape and a layout hint), an
/// output path that cannot be written (before anything runs), a folder given as the model, an
/// f16 graph input (naming the model), and an op that is not ONNX at all versus one incept lacks.
#[test]
fn errors_blame_the_right_thing() {
    let dir = temp_dir("blame");
    let m = model("mini_resnet");
    let input = fixtures().join("mini_resnet.input.npy").display().to_string();

    // NHWC data for an NCHW model: the file is named, with both shapes and how to transpose.
    let nhwc = dir.join("nhwc.npy");
    npy::write(&nhwc, &incept_ir::Tensor::from_vec(vec![1, 64, 64, 3], vec![0f32; 64 * 64 * 3])).expect("npy");
    let nhwc = nhwc.display().to_string();
    let e = fails(&["run", &m, "-i", &nhwc]);
    assert!(
        e.contains(&format!(
            "input file '{nhwc}' has shape [1, 64, 64, 3], but input 'input' of '{m}' is f32[1,3,64,64]"
        )) && e.contains("NHWC (channels-last) data for an NCHW model")
            && e.contains("x.transpose(0, 3, 1, 2)")
            && !e.contains("cannot load"),
        "{e}"
    );
    // The same through an artifact, and a shape that is no permutation gets no layout hint.
    let art = dir.join("m.incept").display().to_string();
    assert!(incept(&["compile", &m, "-o", &art]).status.success());
    let e = fails(&["run", &art, "-i", &nhwc]);
    assert!(e.contains(&format!("input file '{nhwc}'")) && e.contains("NHWC"), "{e}");
    let small = dir.join("small.npy");
    npy::write(&small, &incept_ir::Tensor::from_vec(vec![1, 3, 32, 32], vec![0f32; 3 * 32 * 32])).expect("npy");
    let e = fails(&["check", &m, "-i", &small.display().to_string()]);
    assert!(e.contains("has shape [1, 3, 32, 32], but input 'input'") && !e.contains("NHWC"), "{e}");

    // An output that cannot be written fails before the model is compiled and run.
    let o = incept(&["run", &m, "-i", &input, "-o", "/nonexistent/dir/out.npy"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(e.contains("cannot write '/nonexistent/dir/out.npy'") && !e.contains("compiled in"), "{e}");

    // A folder instead of a model.
    let folder = fixtures().display().to_string();
    for sub in ["compile", "inspect", "bench"] {
        let e = fails(&[sub, &folder]);
        assert!(
            e.contains(&format!("'{folder}': it is a directory, not an ONNX model file"))
                && e.contains("mini_inception.onnx")
                && !e.contains("No such device"),
            "{sub}: {e}"
        );
    }

    // An f16 graph input: the model file and the input are named.
    const F16: i32 = 10;
    let f16 = one_node_model(&dir, "f16.onnx", "Identity", "", F16);
    for sub in ["check", "compile"] {
        let e = fails(&[sub, &f16]);
        assert!(e.contains(&f16) && e.contains("graph input 'x' is f16"), "{sub}: {e}");
    }

    // A real ONNX operator incept lacks, a typo, and a custom-domain op.
    let det = one_node_model(&dir, "det.onnx", "Det", "", 1);
    let e = fails(&["inspect", &det]);
    assert!(e.contains("ONNX operator 'Det' (opset 17) is not supported by incept yet; nodes: 'n'"), "{e}");
    let typo = one_node_model(&dir, "typo.onnx", "Rleu", "", 1);
    let e = fails(&["compile", &typo]);
    assert!(e.contains("'Rleu' is not an ONNX operator (did you mean 'Relu'?)"), "{e}");
    let custom = one_node_model(&dir, "custom.onnx", "Foo", "com.acme", 1);
    let e = fails(&["run", &custom, "-i", &input]);
    assert!(e.contains("'Foo' is not an ONNX operator: it is a custom operator of domain 'com.acme'"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Each row of the pass table is that pass's own effect on the graph it first ran on (a pass
/// that never fires shows the imported graph's 38 op nodes, not the last sweep's), and the last
/// row adds them up to the pipeline's.
#[test]
fn pass_table_rows_are_each_pass_own_effect() {
    let o = incept(&["inspect", &model("mini_resnet"), "--stats"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<String> = stdout(&o)
        .lines()
        .filter(|l| l.starts_with("; "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for want in [
        "; remove-identity 0 38 -> 38 ",
        "; fold-batchnorm 0 38 -> 38 ",
        "; fold-affine 16 38 -> 22 ",
        "; fold-pad 0 22 -> 22 ",
        "; fuse-epilogue 9 22 -> 13 ",
        "; hoist-strides 1 22 -> 22 ",
        "; (all passes) 26 38 -> 13 2.57M -> 2.57M ",
    ] {
        assert!(rows.iter().any(|r| r.starts_with(want)), "no row '{want}' in\n{}", rows.join("\n"));
    }
    // The imported graph has those 38 op nodes.
    let o0 = stdout(&incept(&["inspect", &model("mini_resnet"), "-O0"]));
    let ops =
        o0.lines().filter(|l| l.trim_start().starts_with('%') && l.contains(" = ") && !l.contains(" = const ")).count();
    assert_eq!(ops, 38, "{o0}");
}

/// `--print-after` refuses unknown pass names like `--disable-pass` does, and says so when the
/// pass it names never changed the graph or is not in the pipeline, instead of printing nothing.
#[test]
fn print_after_names_are_checked_and_silence_is_explained() {
    let m = model("mini_resnet");
    let e = fails(&["inspect", &m, "--print-after", "fold-batchnrom"]);
    assert!(e.contains("--print-after: unknown pass 'fold-batchnrom'") && e.contains("fold-batchnorm"), "{e}");
    let s = stdout(&incept(&["inspect", &m, "--print-after", "fold-batchnorm"]));
    assert!(s.contains("; --print-after fold-batchnorm: the pass never changed the graph"), "{s}");
    let s = stdout(&incept(&["inspect", &m, "-O1", "--print-after", "fuse-epilogue"]));
    assert!(s.contains("; --print-after fuse-epilogue: the pass is not in this pipeline"), "{s}");
    // A pass that fired prints its IR and no such note.
    let s = stdout(&incept(&["inspect", &m, "--print-after", "fold-affine"]));
    assert!(s.contains("; IR after fold-affine\ngraph") && !s.contains("; --print-after"), "{s}");
}

/// `bench` reports throughput in images/s (runs/s times the batch, the first input's leading
/// dimension), and with `--json --profile` the JSON holds the profile instead of dropping it.
#[test]
fn bench_reports_images_per_second_and_json_profiles() {
    let m = model("torch_resnet_mini");
    let o = incept(&["bench", &m, "--dim", "N=4", "--iters", "3", "--warmup", "1", "--threads", "1"]);
    let s = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = s.lines().find(|l| l.starts_with("latency ")).unwrap_or_default();
    let number = |after: &str| -> f64 {
        line.split(after).nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0.0)
    };
    let (images, runs) = (number("throughput "), number("images/s ("));
    assert!(line.contains(" runs/s of batch 4)") && runs > 0.0, "{s}");
    assert!((images / runs - 4.0).abs() < 0.01, "{images} images/s vs {runs} runs/s at batch 4: {line}");

    let o = incept(&[
        "bench",
        &m,
        "--dim",
        "N=2",
        "--iters",
        "2",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--json",
        "--profile",
    ]);
    let j = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(j.lines().count(), 1, "{j}");
    assert!(j.contains("\"batch\": 2, \"images_per_s\": "), "{j}");
    let profile = &j[j.find("\"profile\": {\"steps\": [{\"step\": 0, \"node\": \"").expect("a profile with steps")..];
    // Every step of the plan, with its kernel and time, and the op families.
    let steps = profile.matches("{\"step\": ").count();
    let plan_steps = stdout(&incept(&["inspect", &m, "--dim", "N=2", "--memory"]))
        .lines()
        .last()
        .and_then(|l| l.split("; ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    assert!(steps > 10 && steps == plan_steps, "{steps} steps in the JSON, {plan_steps} in the plan: {j}");
    assert!(profile.contains("\"kernel\": \"gemm ") && profile.contains("\"by_op\": [{\"op\": "), "{j}");
    assert!(j.trim_end().ends_with("]}}"), "{j}");
}

/// Names of 100+ characters (tf2onnx scopes) are shortened in tables, keeping head and tail, and
/// kept whole in the IR text and in JSON.
#[test]
fn long_names_are_shortened_in_tables_only() {
    use incept_compiler::table::{NAME_WIDTH, shorten};
    let dir = temp_dir("long-names");
    let long = |k: usize| format!("model/{}/block_{k}/conv2d_{k}/BiasAdd:0", "scope_with_a_long_name/".repeat(5));
    let (a, b) = (long(1), long(2));
    assert!(a.len() > 130);
    let m =
        write_model(&dir, "long.onnx", vec![node("Relu", "", &a, "x", &a), node("Sigmoid", "", &b, &a, "y")], 1, "");
    let short = shorten(&a, NAME_WIDTH);
    let tables = [
        vec!["bench", &m, "-O0", "--iters", "1", "--warmup", "0", "--threads", "1", "--profile"],
        vec!["inspect", &m, "-O0", "--memory"],
        vec!["inspect", &m, "-O0", "--kernels"],
    ];
    for args in tables {
        let o = incept(&args);
        let s = stdout(&o);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(s.contains(&short) && !s.contains(&a), "{args:?}:\n{s}");
        let widest = s.lines().map(|l| l.chars().count()).max().unwrap_or(0);
        assert!(widest <= 160, "{args:?}: a {widest}-column line:\n{s}");
    }
    let ir = stdout(&incept(&["inspect", &m, "-O0"]));
    assert!(ir.contains(&a), "{ir}");
    let j = stdout(&incept(&["bench", &m, "-O0", "--iters", "1", "--warmup", "0", "--json", "--profile"]));
    assert!(j.contains(&format!("\"node\": \"{a}\"")), "{j}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `inspect --kernels` lists the plan without compiling or running it: one row per step with its
/// node, op, kernel, tier, tiles, FLOPs and shapes, the same steps the memory plan counts.
#[test]
fn inspect_kernels_lists_the_plan() {
    let m = model("mini_resnet");
    let o = incept(&["inspect", &m, "--kernels", "--cpu", "avx512"]);
    let s = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(s.starts_with("step  node ") && s.lines().next().unwrap_or_default().ends_with("  shapes"), "{s}");
    let rows: Vec<Vec<&str>> = s.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    // The stem conv: packing, then its GEMM on the AVX-512 microkernel with 2*16*1024*147 FLOPs.
    let stem: Vec<&Vec<&str>> = rows.iter().filter(|r| r.get(1) == Some(&"Conv__1")).collect();
    assert_eq!(stem.len(), 2, "{s}");
    assert_eq!(stem[0][..3], ["0", "Conv__1", "Im2col"], "{s}");
    assert!(stem[0].contains(&"f32x4"), "{s}");
    let gemm = stem[1].join(" ");
    assert!(
        gemm.starts_with("1 Conv__1 Conv gemm 16x1024x147 b1 avx512 avx512 ")
            && gemm.ends_with(" 4.82M f32[1,3,64,64] -> f32[1,16,32,32]"),
        "{gemm}"
    );
    let last = s.lines().last().unwrap_or_default();
    assert!(last.contains(" steps, ") && last.ends_with("planned for --cpu avx512 (tier avx512)"), "{s}");

    // At the baseline tier every step is Cranelift code, and the steps are the memory plan's.
    let s = stdout(&incept(&["inspect", &m, "--kernels", "--cpu", "baseline"]));
    let steps = s.lines().count() - 2;
    assert!(s.lines().skip(1).take(steps).all(|l| l.split_whitespace().any(|w| w == "f32x4")), "{s}");
    assert!(!s.contains("avx512 "), "{s}");
    let memory = stdout(&incept(&["inspect", &m, "--memory"]));
    assert!(memory.contains(&format!("; {steps} steps;")), "{steps} steps vs\n{memory}");
    assert!(s.lines().last().unwrap_or_default().starts_with(&format!("{steps} steps, ")), "{s}");
    let help = stdout(&incept(&["inspect", "--help"]));
    assert!(help.contains("--kernels") && help.contains("tier") && help.contains("--cpu <CPU>"), "{help}");
}

/// On the command line a symbolic dimension that neither a flag nor the data binds is bound to 1,
/// with a one-line note; --dim overrides it, and `run` binds it from the data (no note). The
/// library keeps refusing unbound dims (tests/tests/api.rs).
#[test]
fn symbolic_dims_bind_to_one_by_default_on_the_command_line() {
    const NOTE: &str = "note: symbolic dimension N bound to 1; use --dim N=... to choose\n";
    let dir = temp_dir("symbolic");
    let m = model("torch_resnet_mini");
    let art = dir.join("m.incept").display().to_string();
    for args in [
        vec!["compile", &m, "-o", &art],
        vec!["bench", &m, "--iters", "1", "--warmup", "0"],
        vec!["check", &m],
        vec!["inspect", &m, "--kernels"],
    ] {
        let o = incept(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).matches(NOTE).count(), 1, "{args:?}: {}", stderr(&o));
    }
    assert!(stdout(&incept(&["inspect", &art])).contains("inputs:\n  input : f32[1,3,64,64]"));
    // --dim chooses, without a note; bench counts images of that batch.
    let o = incept(&["bench", &m, "--dim", "N=3", "--iters", "1", "--warmup", "0"]);
    assert!(o.status.success() && !stderr(&o).contains("note:"), "{}", stderr(&o));
    assert!(stdout(&o).contains("runs/s of batch 3)"), "{}", stdout(&o));
    // run binds the batch from its data: two images give two rows of scores.
    let one = npy::read(&fixtures().join("torch_resnet_mini.input.npy")).expect("input");
    let values: Vec<f32> = one.view::<f32>().expect("f32").iter().copied().collect();
    let two = dir.join("two.npy");
    npy::write(&two, &incept_ir::Tensor::from_vec(vec![2, 3, 64, 64], [values.clone(), values].concat())).expect("npy");
    let o = incept(&["run", &m, "-i", &two.display().to_string()]);
    assert!(o.status.success() && !stderr(&o).contains("note:"), "{}", stderr(&o));
    assert!(stdout(&o).contains("output f32[2, 10]"), "{}", stdout(&o));
    // A dimension with neither a size nor a name has no symbol for --dim: the note says --shape.
    let unnamed = write_model_dims(&dir, "unnamed.onnx", vec![node("Relu", "", "r", "x", "y")], 1, "", &[-1, 4]);
    let o = incept(&["compile", &unnamed]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "note: input 'x' f32[?,4] has dimensions without a size or a name (?), bound to 1; use --shape x=... to choose"
        ),
        "{}",
        stderr(&o)
    );
    // The IR keeps the symbol: inspect shows the model as it is.
    let o = incept(&["inspect", &m]);
    assert!(stdout(&o).contains("input %input : f32[N,3,64,64]") && !stderr(&o).contains("note:"));
    std::fs::remove_dir_all(&dir).ok();
}

/// The README's install command installs this binary, and every `incept` command it shows uses
/// a subcommand and flags that exist (each flag appears in that subcommand's --help).
#[test]
fn readme_commands_use_real_subcommands_and_flags() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let install = &readme[readme.find("## Install").expect("an Install section")..];
    let install = &install[..install[3..].find("\n## ").map_or(install.len(), |i| i + 3)];
    assert!(install.contains("\n    cargo install --path compiler --locked\n"), "{install}");
    let manifest = std::fs::read_to_string(root.join("compiler/Cargo.toml")).expect("compiler/Cargo.toml");
    assert!(manifest.contains("[[bin]]\nname = \"incept\""), "compiler/ does not build the `incept` binary");

    let mut checked = 0;
    let mut helps: std::collections::HashMap<String, String> = Default::default();
    for line in readme.lines().filter_map(|l| l.strip_prefix("    incept ")) {
        let words: Vec<&str> = line.split('#').next().unwrap_or_default().split_whitespace().collect();
        let Some((sub, args)) = words.split_first() else { continue };
        let help = helps.entry(sub.to_string()).or_insert_with(|| {
            let o = incept(&[sub, "--help"]);
            assert!(o.status.success(), "README: `incept {sub}` is not a subcommand: {}", stderr(&o));
            stdout(&o)
        });
        for flag in args.iter().map(|a| a.trim_start_matches('[')).filter(|a| a.starts_with('-')) {
            let flag = flag.split(['=', ']']).next().unwrap_or_default();
            // Options are shown as `-O <LEVEL>`, `-i, --input <FILE>` or `--memory`.
            let shown = help.split(|c: char| c.is_whitespace() || c == ',').any(|w| w == flag);
            assert!(shown, "README: `incept {line}`: `incept {sub}` has no option {flag}");
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} flags found in the README's commands");
}

/// `--threads` past four per logical CPU is refused at once with the limit, on every path that
/// starts workers (compile, run from ONNX and from an artifact, bench).
#[test]
fn thread_counts_are_bounded() {
    let dir = temp_dir("threads");
    let art = dir.join("m.incept").display().to_string();
    let (m, x) = (model("mini_resnet"), fixtures().join("mini_resnet.input.npy").display().to_string());
    assert!(incept(&["compile", &m, "-o", &art]).status.success());
    for args in [
        vec!["compile", &m, "--threads", "100000"],
        vec!["run", &m, "-i", &x, "--threads", "100000"],
        vec!["run", &art, "-i", &x, "--threads", "18446744073709551615"],
        vec!["bench", &art, "--threads", "100000", "--iters", "1"],
    ] {
        let start = std::time::Instant::now();
        let err = fails(&args);
        assert!(err.contains("worker threads asked for; at most"), "{args:?}: {err}");
        assert!(start.elapsed().as_secs_f64() < 1.0, "{args:?} took {:?}", start.elapsed());
    }
}

/// `check` judges a quantized graph by its nodes (a QuantizeLinear turns an f32 rounding at a
/// halfway point into a whole step), in f32 and with --precision int8, and says so.
#[test]
fn check_passes_quantized_models_by_their_nodes() {
    let m = fixtures().join("quant/mini_resnet.qdq.onnx").display().to_string();
    for extra in [&[][..], &["--precision", "int8"][..]] {
        let mut args = vec!["check", m.as_str()];
        args.extend_from_slice(extra);
        let o = incept(&args);
        let text = stdout(&o);
        assert!(o.status.success(), "{args:?}: {}\n{text}", stderr(&o));
        assert!(text.contains("PASS: every node's kernels agree"), "{args:?}: {text}");
        let header = if extra.is_empty() { "quantized graph:" } else { "precision int8:" };
        assert!(text.contains(header), "{args:?}: {text}");
    }
}
