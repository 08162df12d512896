//! Signed artifacts end to end: `incept keygen`, `compile --sign`, `inspect`, and `run`/`bench
//! --trust` accepting the right key and refusing a missing, wrong or broken signature.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name).display().to_string()
}

fn incept(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_incept")).args(args).output().expect("run incept")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(args: &[&str]) -> String {
    let o = incept(args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    text(&o)
}

fn refused(args: &[&str]) -> String {
    let o = incept(args);
    assert_eq!(o.status.code(), Some(1), "{args:?} should fail: {}", text(&o));
    text(&o)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn signed_artifacts_load_only_under_a_trusted_key() {
    let dir = std::env::temp_dir().join(format!("incept-cli-signing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = |name: &str| -> PathBuf { dir.join(name) };
    let (m, x) = (fixture("mini_resnet.onnx"), fixture("mini_resnet.input.npy"));

    let made = ok(&["keygen", &s(&p("build"))]);
    assert!(made.contains("wrote the secret key"), "{made}");
    ok(&["keygen", &s(&p("other"))]);
    // Keys are never overwritten; the secret one is private.
    assert!(refused(&["keygen", &s(&p("build"))]).contains("never overwrites"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(p("build")).unwrap().permissions().mode() & 0o777, 0o600);
    }

    let out = ok(&["compile", &m, "-o", &s(&p("signed.incept")), "--sign", &s(&p("build"))]);
    assert!(out.contains("signed by "), "{out}");
    ok(&["compile", &m, "-o", &s(&p("plain.incept"))]);
    let public = std::fs::read_to_string(p("build.pub")).unwrap();
    let key = public.split_whitespace().nth(1).unwrap().to_string();
    assert!(ok(&["inspect", &s(&p("signed.incept"))]).contains(&format!("signed by: {key}")));
    assert!(ok(&["inspect", &s(&p("plain.incept"))]).contains("signature: none"));

    // The right key: runs, with the unsigned artifact's output.
    let (a, b) = (s(&p("a.npy")), s(&p("b.npy")));
    ok(&["run", &s(&p("signed.incept")), "-i", &x, "--trust", &s(&p("build.pub")), "-o", &a]);
    ok(&["run", &s(&p("plain.incept")), "-i", &x, "-o", &b]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    ok(&[
        "bench",
        &s(&p("signed.incept")),
        "--iters",
        "1",
        "--trust",
        &s(&p("other.pub")),
        "--trust",
        &s(&p("build.pub")),
    ]);

    // Refusals, each saying why.
    let e = refused(&["run", &s(&p("signed.incept")), "-i", &x, "--trust", &s(&p("other.pub"))]);
    assert!(e.contains("does not trust"), "{e}");
    let e = refused(&["run", &s(&p("plain.incept")), "-i", &x, "--trust", &s(&p("build.pub"))]);
    assert!(e.contains("not signed"), "{e}");
    let e = refused(&["bench", &m, "--iters", "1", "--trust", &s(&p("build.pub"))]);
    assert!(e.contains("--trust applies to `.incept` artifacts"), "{e}");
    let e = refused(&["run", &s(&p("signed.incept")), "-i", &x, "--trust", &s(&p("build"))]);
    assert!(e.contains("not an incept public key"), "{e}");
    let e = refused(&["compile", &m, "-o", &s(&p("x.incept")), "--sign", &s(&p("build.pub"))]);
    assert!(e.contains("not an incept secret key"), "{e}");
    // A signed artifact whose contents changed (digest recomputed by hand is covered in the
    // runtime's tests; here a byte of the weights) is refused even without --trust.
    let mut bytes = std::fs::read(p("signed.incept")).unwrap();
    let at = bytes.len() - 200;
    bytes[at] ^= 1;
    std::fs::write(p("broken.incept"), &bytes).unwrap();
    let e = refused(&["run", &s(&p("broken.incept")), "-i", &x]);
    assert!(e.contains("corrupted") || e.contains("signature"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
