//! How incept's errors reach Python: bad feeds are the caller's mistake (ValueError, TypeError);
//! everything else incept reports is an `incept.InceptError` carrying incept's message.

use incept_runtime::RunError;
use pyo3::PyErr;
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};

create_exception!(
    incept,
    InceptError,
    PyRuntimeError,
    "An error reported by incept: a model it cannot import or compile, an artifact it cannot load, a failed run."
);

/// A run error as a Python exception: wrong inputs are a ValueError, as a wrong argument is.
pub fn run_error(e: RunError) -> PyErr {
    match e {
        RunError::InputCount { .. } | RunError::Input { .. } | RunError::UnknownInput { .. } => {
            PyValueError::new_err(e.to_string())
        }
        other => InceptError::new_err(other.to_string()),
    }
}

/// Any other incept error, with what incept says of it.
pub fn incept_error(e: impl std::fmt::Display) -> PyErr {
    InceptError::new_err(e.to_string())
}
