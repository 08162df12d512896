//! Runs every vendored ONNX backend test case (tests/conformance/data, see vendor.py) through the
//! reference interpreter. Cases listed in tests/conformance/exclusions.txt (each with a reason) may
//! fail; every other case must pass, and an excluded case that passes is reported so the list
//! stays honest.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use incept_ir::interp;
use incept_tests::conformance::{cases, import_case, read_set, test_sets};
use incept_tests::{allclose, repo_root};

/// The ONNX backend tests' own default tolerances are rtol 1e-3, atol 1e-7; the reference
/// interpreter computes in f64, so it is held to a tighter relative bound, except for the cases
/// marked `~` in exclusions.txt.
const RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-6;
const ONNX_RTOL: f64 = 1e-3;
const ONNX_ATOL: f64 = 1e-7;

fn run_case(dir: &Path, (rtol, atol): (f64, f64)) -> Result<usize, String> {
    let sets = test_sets(dir)?;
    if sets.is_empty() {
        return Err("no test_data_set_* folder".into());
    }
    for set in &sets {
        let inputs = read_set(set, "input")?;
        let expected = read_set(set, "output")?;
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
    let cases = cases();
    let cases: Vec<&str> = cases.iter().map(String::as_str).collect();
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
    let line = format!(
        "conformance: {passed} of {} vendored cases pass ({} at the ONNX default tolerance), {excluded_failed} excluded, {} unexpected failures, {} stale exclusions",
        cases.len(),
        loose.len(),
        unexpected.len(),
        stale.len()
    );
    incept_tests::report("conformance", &line);
    assert!(unexpected.is_empty(), "{} unexpected failures:\n{}", unexpected.len(), unexpected.join("\n"));
    assert!(stale.is_empty(), "excluded cases that now pass (remove them from exclusions.txt):\n{}", stale.join("\n"));
}
