//! incept-runtime (and the C API over it) must stay linkable on its own: no cranelift, petgraph or prost, and neither of
//! incept's own compiler-side crates, anywhere in its dependency tree.

use std::process::Command;

#[test]
fn runtime_has_no_compiler_dependencies() {
    no_compiler_in("incept-runtime");
}

/// The C API links the runtime alone too.
#[test]
fn c_api_has_no_compiler_dependencies() {
    no_compiler_in("incept-capi");
}

fn no_compiler_in(package: &str) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "-p", package, "-e", "no-dev", "--prefix", "none", "--target", "all"])
        .current_dir(incept_tests::repo_root())
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let crates: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(crates.contains(&"incept-runtime"), "unexpected cargo tree output:\n{text}");
    let forbidden = ["cranelift", "petgraph", "prost", "incept-ir", "incept-compiler"];
    let bad: Vec<&&str> = crates.iter().filter(|c| forbidden.iter().any(|f| c.starts_with(f))).collect();
    assert!(bad.is_empty(), "{package} depends on {bad:?}:\n{text}");
}
