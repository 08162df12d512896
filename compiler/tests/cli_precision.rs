//! `--precision bf16` end to end: compile, inspect, run and check; artifacts that record the
//! precision and the bf16 features; refusals on a CPU without them (simulated by hiding features
//! from the runtime with `INCEPT_HIDE_CPU_FEATURES`), and of a CPU choice without bf16.

use std::path::Path;
use std::process::{Command, Output};

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name).display().to_string()
}

fn incept_env(args: &[&str], hide: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_incept"))
        .args(args)
        .env("INCEPT_HIDE_CPU_FEATURES", hide)
        .output()
        .expect("run incept")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(args: &[&str]) -> String {
    let o = incept_env(args, "");
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    text(&o)
}

fn refused_with(args: &[&str], hide: &str) -> String {
    let o = incept_env(args, hide);
    assert_eq!(o.status.code(), Some(1), "{args:?} should fail: {}", text(&o));
    let t = text(&o);
    assert!(!t.contains("panicked") && !t.contains("internal error"), "{t}");
    t
}

fn bf16_here() -> bool {
    incept_compiler::Cpu::Native.bf16_tier().is_some()
}

/// Artifacts for each bf16 CPU are written on any machine; they record the precision and the
/// features, and a CPU without them refuses to load them, naming what is missing and what to
/// compile instead.
#[test]
fn bf16_artifacts_record_their_precision_and_are_refused_without_the_features() {
    let dir = std::env::temp_dir().join(format!("incept-cli-precision-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let model = fixture("mini_resnet.onnx");
    let input = fixture("mini_resnet.input.npy");
    for (cpu, features) in [("avx512bf16", "avx512bf16"), ("amx", "amx-tile")] {
        let art = dir.join(format!("mini_resnet.{cpu}.incept")).display().to_string();
        ok(&["compile", &model, "--precision", "bf16", "--cpu", cpu, "-o", &art]);
        let info = ok(&["inspect", &art]);
        assert!(info.contains(&format!("precision=bf16 ({cpu})")), "{info}");
        assert!(info.contains(features), "{info}");
        // Hidden from the runtime, the feature is missing, whatever this CPU has.
        let t = refused_with(&["run", &art, "-i", &input], features);
        assert!(t.contains("lacks features") && t.contains(features) && t.contains("--precision f32"), "{t}");
    }
    if bf16_here() {
        let art = dir.join("mini_resnet.native.incept").display().to_string();
        ok(&["compile", &model, "--precision", "bf16", "-o", &art]);
        ok(&["run", &art, "-i", &input]);
        // Checking a bf16 artifact needs a bound, and then holds its outputs to it.
        let t = refused_with(&["check", &art, "--onnx", &model, "-i", &input], "");
        assert!(t.contains("computes in bf16") && t.contains("--tolerance"), "{t}");
        ok(&["check", &art, "--onnx", &model, "-i", &input, "--tolerance", "5e-2"]);
        refused_with(&["check", &art, "--onnx", &model, "-i", &input, "--tolerance", "1e-7"], "");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// bf16 on a CPU choice without bf16 instructions is refused before compiling, saying which
/// choices have them; an unknown precision is refused by the parser with the list.
#[test]
fn bf16_without_bf16_instructions_is_refused() {
    let model = fixture("mini_resnet.onnx");
    for cpu in ["baseline", "avx2", "avx512"] {
        let t = refused_with(&["compile", &model, "--precision", "bf16", "--cpu", cpu], "");
        assert!(t.contains("--precision bf16 needs") && t.contains(cpu), "{t}");
    }
    let o = incept_env(&["compile", &model, "--precision", "fp16"], "");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("f32, bf16"), "{}", text(&o));
    // With bf16 hidden from this CPU, native has no bf16 tier.
    let t = refused_with(&["compile", &model, "--precision", "bf16"], "avx512bf16,amx-tile,amx-bf16");
    assert!(t.contains("has neither") && t.contains("--cpu avx512bf16"), "{t}");
}

/// On a CPU with bf16: `inspect --kernels` marks the bf16 steps, `run` gives outputs near the
/// f32 ones, and `check` measures the error against the reference.
#[test]
fn bf16_runs_inspects_and_checks() {
    if !bf16_here() {
        println!("skipped: this CPU runs no bf16 tier");
        return;
    }
    let model = fixture("mini_resnet.onnx");
    let k = ok(&["inspect", &model, "--kernels", "--precision", "bf16"]);
    assert!(
        k.contains("precision bf16")
            && k.contains("gemm")
            && k.lines().any(|l| l.contains("Conv") && l.contains("bf16")),
        "{k}"
    );
    let c = ok(&["check", &model, "--precision", "bf16", "--per-node", "3"]);
    assert!(c.contains("precision bf16") && c.contains("PASS") && c.contains("avx512bf16") || c.contains("amx"), "{c}");
    // Misplaced bf16 pairs in the weights: check finds the node.
    let t = refused_with(&["check", &model, "--precision", "bf16", "--inject-fault", "bf16-swapped-pairs"], "");
    assert!(t.contains("FAIL") && t.contains("first node whose compiled kernels disagree"), "{t}");
}

/// `--precision auto`: within a loose tolerance every node stays bf16; within a tight one the
/// nodes whose rounding moves the output most go back to f32, the measured error within it;
/// a tolerance below f32's own error, or without auto, is refused.
#[test]
fn auto_precision_keeps_the_worst_nodes_in_f32() {
    if !bf16_here() {
        println!("skipped: this CPU runs no bf16 tier");
        return;
    }
    let model = fixture("mini_resnet.onnx");
    let loose = ok(&["compile", &model, "--precision", "auto", "--tolerance", "0.5"]);
    assert!(loose.contains("0 kept in f32"), "{loose}");
    let tight = ok(&["compile", &model, "--precision", "auto", "--tolerance", "5e-4"]);
    let line = tight.lines().find(|l| l.starts_with("precision auto:")).expect("an auto report");
    let kept: usize = line
        .split(" kept in f32")
        .next()
        .and_then(|p| p.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("count");
    assert!(kept >= 1 && tight.matches("  f32: ").count() == kept, "{tight}");
    let err: f64 = line
        .split("output error ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|e| e.parse().ok())
        .expect("error");
    assert!(err <= 5e-4, "{tight}");
    let t = refused_with(&["compile", &model, "--precision", "auto", "--tolerance", "1e-12"], "");
    assert!(t.contains("below what even f32 reaches"), "{t}");
    let t = refused_with(&["compile", &model, "--tolerance", "1e-3"], "");
    assert!(t.contains("--tolerance is the bound of --precision auto"), "{t}");
}
