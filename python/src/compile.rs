//! `incept.compile`: the compiler's options from Python arguments, mirroring the CLI's flags
//! (`--threads`, `-O`, `--shape NAME=D0,D1`, `--dim SYMBOL=N`).

use std::path::PathBuf;

use incept_compiler::CompileOptions;
use incept_compiler::compile::Source;
use incept_compiler::ir::onnx::ImportOptions;
use incept_compiler::passes::Pipeline;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::errors::incept_error;
use crate::model::Model;

/// A count argument (threads, a dimension) that must not be negative.
pub fn count(what: &str, v: i64) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| PyValueError::new_err(format!("{what} must be >= 0, got {v}")))
}

/// `shapes`: an input name to its full shape (`{"input": (1, 3, 224, 224)}`, the CLI's
/// `--shape`), or a symbolic dimension to its size (`{"N": 1}`, the CLI's `--dim`).
fn import_options(shapes: Option<&Bound<'_, PyDict>>) -> PyResult<ImportOptions> {
    let mut opts = ImportOptions::default();
    for (key, value) in shapes.into_iter().flat_map(|d| d.iter()) {
        let name: String =
            key.extract().map_err(|_| PyTypeError::new_err(format!("shapes keys must be strings, got {key}")))?;
        if let Ok(size) = value.extract::<i64>() {
            opts.dims.insert(name.clone(), count(&format!("shapes['{name}']"), size)?);
        } else if let Ok(dims) = value.extract::<Vec<i64>>() {
            let dims = dims.into_iter().map(|d| count(&format!("shapes['{name}']"), d)).collect::<PyResult<_>>()?;
            opts.input_shapes.insert(name, dims);
        } else {
            return Err(PyTypeError::new_err(format!(
                "shapes['{name}'] must be a shape (a sequence of ints) or a symbolic dimension's size (an int), got {value}"
            )));
        }
    }
    Ok(opts)
}

/// The model to compile: a path, or the model's bytes.
enum ModelSource {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// Compiles an ONNX model (a path or the model's bytes) to machine code for this CPU.
#[pyfunction]
#[pyo3(signature = (path, threads = 0, outputs = None, shapes = None, opt_level = 2, precision = "f32", tolerance = None))]
// Python's keyword arguments, one parameter each.
#[allow(clippy::too_many_arguments)]
pub fn compile(
    py: Python<'_>,
    path: &Bound<'_, PyAny>,
    threads: i64,
    outputs: Option<Vec<String>>,
    shapes: Option<&Bound<'_, PyDict>>,
    opt_level: i64,
    precision: &str,
    tolerance: Option<f64>,
) -> PyResult<Model> {
    let level = match opt_level {
        0..=2 => opt_level as u8,
        _ => return Err(PyValueError::new_err(format!("opt_level must be 0, 1 or 2, got {opt_level}"))),
    };
    let precision: incept_compiler::Precision =
        precision.parse().map_err(|e: String| PyValueError::new_err(format!("precision: {e}")))?;
    if tolerance.is_some() && precision != incept_compiler::Precision::Auto {
        return Err(PyValueError::new_err("tolerance is the bound of precision=\"auto\""));
    }
    let options = CompileOptions {
        import: import_options(shapes)?,
        pipeline: Pipeline::from_level(level),
        threads: count("threads", threads)?,
        outputs: outputs.unwrap_or_default(),
        precision,
        auto_tolerance: tolerance.unwrap_or(1e-2),
        ..CompileOptions::default()
    };
    let source = if let Ok(b) = path.cast::<PyBytes>() {
        ModelSource::Bytes(b.as_bytes().to_vec())
    } else {
        ModelSource::Path(path.extract().map_err(|_| {
            PyTypeError::new_err(format!("path must be a str, an os.PathLike or the model's bytes, got {path}"))
        })?)
    };
    py.detach(move || {
        let (compiled, what) = match source {
            ModelSource::Path(p) => (incept_compiler::compile(&p, &options), format!("'{}'", p.display())),
            ModelSource::Bytes(b) => (incept_compiler::compile(Source::from(b), &options), "the model".into()),
        };
        let model = compiled.map_err(|e| match e {
            // An I/O error already names the file.
            incept_compiler::compile::CompileError::Import(incept_compiler::ir::Error::Io { .. }) => incept_error(e),
            e => {
                let mut msg = format!("cannot compile {what}: {e}");
                if msg.contains("ImportOptions::dims") || msg.contains("input_shapes") {
                    // The compiler's hint names its Rust options; say what they are called here.
                    msg.push_str(" (from Python: shapes={'input name': [d0, d1, ...]} or shapes={'dim name': size})");
                }
                incept_error(msg)
            }
        })?;
        Ok(Model::new(model, incept_compiler::artifact_info(&options)))
    })
}
