//! Runs every vendored ONNX backend test case (tests/conformance/data, see vendor.py) through the
//! reference interpreter. Cases listed in tests/conformance/exclusions.txt (each with a reason) may
//! fail; every other case must pass, and an excluded case that passes is reported so the list
//! stays honest.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use incept_ir::onnx::{self, ImportOptions};
use incept_ir::{Error, Graph, OpError, Tensor, interp};
use incept_tests::{allclose, repo_root};

/// The ONNX backend tests' own default tolerances are rtol 1e-3, atol 1e-7; the reference
/// interpreter computes in f64, so it is held to a tighter relative bound, except for the cases
/// marked `~` in exclusions.txt.
const RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-6;
const ONNX_RTOL: f64 = 1e-3;
const ONNX_ATOL: f64 = 1e-7;

/// Imports a case. The backend tests feed shapes, axes, pads and scales as graph inputs, which
/// incept needs at compile time: when import reports a dynamic shape, the integer inputs are frozen
/// to their test values, then (if still dynamic) every input. The ops themselves still run in the
/// interpreter either way; freezing only fixes what shape inference may know.
fn import_case(model: &Path, inputs: Vec<Tensor>) -> Result<(Graph, Vec<Tensor>), String> {
    let (proto, _) = onnx::open(model).map_err(|e| format!("open: {e}"))?;
    let names = onnx::graph_input_names(&proto);
    let attempt = |freeze: &dyn Fn(&Tensor) -> bool| -> Result<(Graph, Vec<Tensor>), Error> {
        let mut opts = ImportOptions::default();
        let mut rest = vec![];
        for (name, t) in names.iter().zip(&inputs) {
            if freeze(t) {
                opts.frozen_inputs.insert(name.clone(), t.clone());
            } else {
                opts.input_shapes.insert(name.clone(), t.shape().to_vec());
                rest.push(t.clone());
            }
        }
        Ok((onnx::load(model, &opts)?, rest))
    };
    // Shapes, or other inputs that must be constants (Dropout's training_mode), known only at run time.
    let dynamic = |e: &Error| match e {
        Error::Node { error: OpError::DynamicShape(_), .. } => true,
        Error::Node { error: OpError::Unsupported(m), .. } => m.contains("computed at run time"),
        _ => false,
    };
    match attempt(&|_| false) {
        Err(e) if dynamic(&e) => match attempt(&|t| t.dtype().is_int()) {
            Err(e) if dynamic(&e) => attempt(&|_| true),
            r => r,
        },
        r => r,
    }
    .map_err(|e| format!("import: {e}"))
}

fn run_case(dir: &Path, (rtol, atol): (f64, f64)) -> Result<usize, String> {
    let mut sets: Vec<_> = fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_")))
        .collect();
    sets.sort();
    if sets.is_empty() {
        return Err("no test_data_set_* folder".into());
    }
    let read_all = |set: &Path, prefix: &str| -> Result<Vec<incept_ir::Tensor>, String> {
        let mut out = vec![];
        for i in 0.. {
            let p = set.join(format!("{prefix}_{i}.pb"));
            if !p.exists() {
                break;
            }
            out.push(onnx::read_tensor_file(&p).map_err(|e| format!("{}: {e}", p.display()))?.1);
        }
        Ok(out)
    };
    for set in &sets {
        let inputs = read_all(set, "input")?;
        let expected = read_all(set, "output")?;
        let (g, inputs) = import_case(&dir.join("model.onnx"), inputs)?;
        incept_ir::verify::verify(&g).map_err(|e| format!("verify: {e}"))?;
        let outs = interp::run(&g, &inputs).map_err(|e| format!("run: {e}"))?;
        if expected.is_empty() || outs.len() != expected.len() {
            return Err(format!("{} outputs, expected {}", outs.len(), expected.len()));
        }
        for (k, (got, want)) in outs.iter().zip(&expected).enumerate() {
            allclose(got, want, rtol, atol)
                .map_err(|e| format!("{}: output {k}: {e}", set.file_name().unwrap_or_default().to_string_lossy()))?;
        }
    }
    Ok(sets.len())
}

/// Excluded cases with their reasons, and cases compared at the ONNX default tolerance.
fn exclusions() -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let text = fs::read_to_string(repo_root().join("tests/conformance/exclusions.txt")).expect("exclusions.txt exists");
    let (mut out, mut loose) = (BTreeMap::new(), BTreeMap::new());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (case, reason) = line.split_once('|').unwrap_or_else(|| panic!("exclusion without a reason: {line}"));
        let reason = reason.trim();
        assert!(!reason.is_empty(), "exclusion without a reason: {line}");
        let (map, case) = match case.trim().strip_prefix("~ ") {
            Some(c) => (&mut loose, c),
            None => (&mut out, case.trim()),
        };
        assert!(map.insert(case.trim().to_string(), reason.to_string()).is_none(), "duplicate entry {line}");
    }
    (out, loose)
}

#[test]
fn onnx_backend_cases() {
    let data = repo_root().join("tests/conformance/data");
    let manifest = fs::read_to_string(repo_root().join("tests/conformance/MANIFEST.txt")).expect("MANIFEST.txt exists");
    let cases: Vec<&str> = manifest.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    assert!(cases.len() > 500, "expected the vendored cases, found {}", cases.len());
    let (excluded, loose) = exclusions();
    let (mut passed, mut excluded_failed) = (0, 0);
    let mut unexpected = vec![];
    let mut stale = vec![];
    for case in &cases {
        let tol = if loose.contains_key(*case) { (ONNX_RTOL, ONNX_ATOL) } else { (RTOL, ATOL) };
        let result = run_case(&data.join(case), tol);
        match (result, excluded.get(*case)) {
            (Ok(_), None) => passed += 1,
            (Ok(_), Some(_)) => stale.push(case.to_string()),
            (Err(_), Some(_)) => excluded_failed += 1,
            (Err(e), None) => unexpected.push(format!("{case}: {e}")),
        }
    }
    for e in excluded.keys().chain(loose.keys()) {
        assert!(cases.contains(&e.as_str()), "exclusion {e} names no vendored case");
    }
    println!(
        "conformance: {passed} of {} vendored cases pass ({} at the ONNX default tolerance), {excluded_failed} excluded, {} unexpected failures, {} stale exclusions",
        cases.len(),
        loose.len(),
        unexpected.len(),
        stale.len()
    );
    assert!(unexpected.is_empty(), "{} unexpected failures:\n{}", unexpected.len(), unexpected.join("\n"));
    assert!(stale.is_empty(), "excluded cases that now pass (remove them from exclusions.txt):\n{}", stale.join("\n"));
}
