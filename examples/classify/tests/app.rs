//! The runtime-only app: its dependency tree holds no compiler crate, and run on the stored
//! artifact it prints ONNX Runtime's top-5.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn links_only_the_runtime() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "-p", "incept-example-classify", "-e", "normal,build", "--prefix", "none", "--target", "all"])
        .current_dir(repo())
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let crates: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(crates.contains(&"incept-runtime"), "unexpected cargo tree output:\n{text}");
    let forbidden = ["cranelift", "petgraph", "prost", "iced-x86", "incept-ir", "incept-compiler"];
    let bad: Vec<&&str> = crates.iter().filter(|c| forbidden.iter().any(|f| c.starts_with(f))).collect();
    assert!(bad.is_empty(), "the example depends on {bad:?}:\n{text}");
}

#[test]
fn prints_onnx_runtimes_top_5() {
    let fixtures = repo().join("tests/fixtures");
    let o = Command::new(env!("CARGO_BIN_EXE_classify"))
        .arg(fixtures.join("mini_resnet.baseline.incept"))
        .arg(fixtures.join("mini_resnet.input.npy"))
        .args(["--threads", "2"])
        .output()
        .expect("run classify");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    let want = incept_runtime::npy::read(fixtures.join("mini_resnet.ort_output.npy")).expect("ORT output");
    let want = incept_runtime::top_k(want.as_f32().expect("f32"), 5);
    let got: Vec<(usize, f32)> = stdout
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            (
                w.next().and_then(|i| i.parse().ok()).expect("class"),
                w.next().and_then(|v| v.parse().ok()).expect("score"),
            )
        })
        .collect();
    assert_eq!(got.len(), 5, "{stdout}");
    for ((gi, gv), (wi, wv)) in got.iter().zip(&want) {
        assert_eq!(gi, wi, "class order differs from ONNX Runtime's:\n{stdout}");
        assert!((gv - wv).abs() <= 1e-4 * wv.abs().max(1.0), "class {gi}: {gv} vs ORT {wv}");
    }
    // Errors are messages, not panics.
    let o = Command::new(env!("CARGO_BIN_EXE_classify")).arg("missing.incept").arg("x.npy").output().expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(1) && err.contains("cannot read") && err.contains("missing.incept"), "{err}");
    let o = Command::new(env!("CARGO_BIN_EXE_classify")).arg("--top").arg("x").output().expect("run");
    assert_eq!(o.status.code(), Some(2));
}
