//! Every `incept` command that writes a file leaves what was there when it fails, and refuses an
//! output that is one of its own inputs before it runs: compile -o, run -o (files and a folder),
//! bench --trace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

fn incept(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_incept")).args(args).output().expect("run incept")
}

/// Runs a command that must fail cleanly; returns its stderr.
fn fails(args: &[&str]) -> String {
    let o = incept(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{args:?} should fail with exit code 1: {err}");
    // (After a compile, its timing line comes first.)
    assert!(err.lines().any(|l| l.starts_with("error: ")), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    err
}

fn succeeds(args: &[&str]) -> Output {
    let o = incept(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

/// A fresh folder holding copies of mini_resnet and its input.
fn workspace(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("incept-cli-files-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(fixture("mini_resnet.onnx"), dir.join("m.onnx")).expect("copy model");
    std::fs::copy(fixture("mini_resnet.input.npy"), dir.join("x.npy")).expect("copy input");
    dir
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The folder's files and their contents, to show that nothing changed (and no temporary file
/// was left behind).
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let p = e.expect("entry").path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap_or_default())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn compile_never_loses_a_file() {
    let dir = workspace("compile");
    let (m, art) = (dir.join("m.onnx"), dir.join("prod.incept"));
    // The output is the model itself: refused before compiling, the model untouched.
    let before = snapshot(&dir);
    let err = fails(&["compile", &s(&m), "-o", &s(&m)]);
    assert!(err.contains("is the model"), "{err}");
    assert_eq!(snapshot(&dir), before);
    // Also through another spelling of the same file.
    let other = dir.join(".").join("m.onnx");
    fails(&["compile", &s(&m), "-o", &s(&other)]);
    assert_eq!(snapshot(&dir), before);

    // A good artifact from yesterday survives every failed compile that targets it.
    succeeds(&["compile", &s(&m), "-o", &s(&art)]);
    let good = snapshot(&dir);
    assert!(
        good.iter().any(|(n, b)| n == "prod.incept" && !b.is_empty()),
        "{:?}",
        good.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let broken = dir.join("broken.onnx");
    let bytes = std::fs::read(&m).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let good = snapshot(&dir);
    fails(&["compile", &s(&broken), "-o", &s(&art)]);
    fails(&["compile", &s(&m), "--outputs", "no_such_value", "-o", &s(&art)]);
    assert_eq!(snapshot(&dir), good, "a failed compile changed the folder");

    // A folder that does not exist is reported before compiling; nothing is created.
    let err = fails(&["compile", &s(&m), "-o", &s(&dir.join("missing/x.incept"))]);
    assert!(err.contains("cannot write"), "{err}");
    assert_eq!(snapshot(&dir), good);

    // A successful compile replaces the old artifact, leaving no temporary file.
    succeeds(&["compile", &s(&m), "--cpu", "baseline", "-o", &s(&art)]);
    let after = snapshot(&dir);
    assert_eq!(after.len(), good.len(), "{:?}", after.iter().map(|f| &f.0).collect::<Vec<_>>());
    assert_ne!(after, good, "the artifact was not replaced");
}

#[test]
fn run_and_bench_never_write_over_their_inputs() {
    let dir = workspace("run");
    let (m, x) = (dir.join("m.onnx"), dir.join("x.npy"));
    let before = snapshot(&dir);
    for args in [
        vec!["run", &s(&m), "-i", &s(&x), "-o", &s(&x)],
        vec!["run", &s(&m), "-i", &format!("input={}", s(&x)), "-o", &s(&x)],
        vec!["run", &s(&m), "--reference", "-i", &s(&x), "-o", &s(&m)],
        vec!["bench", &s(&m), "-i", &s(&x), "--iters", "1", "--trace", &s(&x)],
        vec!["bench", &s(&m), "--iters", "1", "--trace", &s(&m)],
    ] {
        let err = fails(&args);
        assert!(err.contains("write it elsewhere"), "{args:?}: {err}");
        assert_eq!(snapshot(&dir), before, "{args:?}");
    }

    // Outputs into a folder: the output named "output" would be written over the input file
    // output.npy that the command reads; refused before anything is written.
    let out_dir = dir.join("outs");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::copy(&x, out_dir.join("output.npy")).unwrap();
    let before = snapshot(&out_dir);
    let err = fails(&["run", &s(&m), "-i", &s(&out_dir.join("output.npy")), "-o", &s(&out_dir)]);
    assert!(err.contains("write it elsewhere"), "{err}");
    assert_eq!(snapshot(&out_dir), before);

    // Written for real: an existing output file is replaced whole.
    let y = dir.join("y.npy");
    std::fs::write(&y, b"old").unwrap();
    succeeds(&["run", &s(&m), "-i", &s(&x), "-o", &s(&y)]);
    let got = incept_ir::npy::read(&y).expect("a whole .npy");
    assert_eq!(got.shape(), &[1, 10]);
    let names: Vec<String> = snapshot(&dir).into_iter().map(|f| f.0).collect();
    assert_eq!(names, ["m.onnx", "outs", "x.npy", "y.npy"]);
}
