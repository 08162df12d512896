//! Python bindings of incept (`import incept`): compile an ONNX model to machine code, run it on
//! numpy arrays, save and load compiled `.incept` artifacts.
//!
//! The native module is `incept._incept`; the `incept` package re-exports it (python/incept/).
//! Everything here needs the `extension` feature (maturin turns it on): without it the crate is
//! empty, so the workspace builds and tests without Python.

#![cfg(feature = "extension")]

mod compile;
mod convert;
mod errors;
mod model;

use pyo3::prelude::*;

#[pymodule]
fn _incept(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("InceptError", m.py().get_type::<errors::InceptError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<model::Model>()?;
    m.add_class::<model::NodeArg>()?;
    m.add_function(wrap_pyfunction!(compile::compile, m)?)?;
    m.add_function(wrap_pyfunction!(model::load, m)?)?;
    Ok(())
}
