//! Helpers shared by the workspace-level integration tests.

use std::path::{Path, PathBuf};

use incept_ir::Tensor;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// `tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    repo_root().join("tests").join("fixtures")
}

/// The real-exporter fixture models (each has NAME.onnx, NAME.input.npy, NAME.ort_output.npy).
pub const FIXTURES: [&str; 7] = [
    "mini_resnet",
    "mini_inception",
    "mini_xception",
    "mini_mobilenetv2",
    "torch_resnet_mini",
    "torch_inception_mini",
    "torch_separable_mini",
];

/// Largest |got - want| divided by the largest |want| (the relative error the tests bound).
pub fn max_rel_err(got: &Tensor, want: &Tensor) -> Result<f64, String> {
    if got.shape() != want.shape() {
        return Err(format!("shape {:?} differs from expected {:?}", got.shape(), want.shape()));
    }
    let g = got.to_f64s().map_err(|e| e.to_string())?;
    let w = want.to_f64s().map_err(|e| e.to_string())?;
    let scale = w.iter().fold(0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
    let mut worst = 0f64;
    for (a, b) in g.iter().zip(&w) {
        if a.is_nan() != b.is_nan() {
            return Ok(f64::INFINITY);
        }
        if !a.is_nan() {
            worst = worst.max((a - b).abs());
        }
    }
    Ok(worst / scale)
}

/// numpy-style `allclose`: `|got - want| <= atol + rtol * |want|` elementwise, with matching
/// dtypes and shapes; NaN matches NaN and infinities must match exactly.
pub fn allclose(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!("dtype {} differs from expected {}", got.dtype(), want.dtype()));
    }
    if got.shape() != want.shape() {
        return Err(format!("shape {:?} differs from expected {:?}", got.shape(), want.shape()));
    }
    let g = got.to_f64s().map_err(|e| e.to_string())?;
    let w = want.to_f64s().map_err(|e| e.to_string())?;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = if a.is_nan() || b.is_nan() {
            a.is_nan() && b.is_nan()
        } else if a.is_infinite() || b.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= atol + rtol * b.abs()
        };
        if !ok {
            return Err(format!("element {i}: got {a}, expected {b}"));
        }
    }
    Ok(())
}
