//! `incept.Model`: a compiled model that runs on numpy arrays, in incept's form
//! (`run({name: array}) -> {name: array}`) or onnxruntime's (`run(output_names, feeds) -> [array]`).

use std::path::PathBuf;
use std::sync::Arc;

use incept_runtime::artifact::{self, ArtifactError, ArtifactInfo};
use incept_runtime::{IoSpec, RunOptions, Tensor};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::convert::{numpy_name, onnx_type, to_numpy, to_tensor, type_string};
use crate::errors::{incept_error, run_error};

/// The name, dtype and shape of a model input or output (onnxruntime's `NodeArg`, plus `dtype`).
#[pyclass(module = "incept", frozen, get_all)]
#[derive(Clone)]
pub struct NodeArg {
    name: String,
    /// The numpy dtype name: 'float32'.
    dtype: String,
    shape: Vec<usize>,
    /// The ONNX type onnxruntime shows: 'tensor(float)'.
    #[pyo3(name = "type")]
    onnx_type: String,
}

#[pymethods]
impl NodeArg {
    fn __repr__(&self) -> String {
        format!("NodeArg(name='{}', dtype='{}', shape={:?})", self.name, self.dtype, self.shape)
    }
}

impl NodeArg {
    fn from_spec(s: &IoSpec) -> NodeArg {
        NodeArg {
            name: s.name.clone(),
            dtype: numpy_name(s.dtype).into(),
            shape: s.shape.clone(),
            onnx_type: onnx_type(s.dtype).into(),
        }
    }
}

/// A compiled model. `run` releases the GIL, and several Python threads may run one model at once.
#[pyclass(module = "incept", frozen)]
pub struct Model {
    // Shared with the closure that runs without the GIL.
    inner: Arc<incept_runtime::Model>,
    // What `save` records about how the code was made.
    info: ArtifactInfo,
    /// The model's inputs: name, dtype, shape.
    #[pyo3(get)]
    inputs: Vec<NodeArg>,
    /// The model's outputs: name, dtype, shape.
    #[pyo3(get)]
    outputs: Vec<NodeArg>,
}

impl Model {
    pub fn new(inner: incept_runtime::Model, info: ArtifactInfo) -> Model {
        let args = |specs: &[IoSpec]| specs.iter().map(NodeArg::from_spec).collect();
        let (inputs, outputs) = (args(&inner.plan().inputs), args(&inner.plan().outputs));
        Model { inner: Arc::new(inner), info, inputs, outputs }
    }

    fn specs_names(specs: &[IoSpec]) -> String {
        specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// The feeds as tensors in the model's input order, or an error naming the wrong feed.
    fn tensors(&self, feeds: &Bound<'_, PyDict>) -> PyResult<Vec<Tensor>> {
        let specs = &self.inner.plan().inputs;
        for key in feeds.keys() {
            let name: String =
                key.extract().map_err(|_| PyTypeError::new_err(format!("feed names must be strings, got {key}")))?;
            if !specs.iter().any(|s| s.name == name) {
                return Err(PyValueError::new_err(format!(
                    "no input named '{name}' (inputs: {})",
                    Self::specs_names(specs)
                )));
            }
        }
        specs
            .iter()
            .map(|s| match feeds.get_item(&s.name)? {
                Some(value) => to_tensor(&s.name, &value, (s.dtype, &s.shape)),
                None => Err(PyValueError::new_err(format!(
                    "missing input '{}' ({}; inputs: {})",
                    s.name,
                    type_string(numpy_name(s.dtype), &s.shape),
                    Self::specs_names(specs)
                ))),
            })
            .collect()
    }

    /// Output positions for `names` (None: all outputs, in order).
    fn output_indices(&self, names: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
        let specs = &self.inner.plan().outputs;
        if names.is_none() {
            return Ok((0..specs.len()).collect());
        }
        let names: Vec<String> =
            names.extract().map_err(|_| PyTypeError::new_err("output_names must be None or a list of output names"))?;
        names
            .iter()
            .map(|n| {
                specs.iter().position(|s| s.name == *n).ok_or_else(|| {
                    PyValueError::new_err(format!("no output named '{n}' (outputs: {})", Self::specs_names(specs)))
                })
            })
            .collect()
    }

    fn execute(&self, py: Python<'_>, feeds: &Bound<'_, PyDict>) -> PyResult<Vec<Tensor>> {
        let inputs = self.tensors(feeds)?;
        let model = Arc::clone(&self.inner);
        py.detach(move || model.run(&inputs)).map(incept_runtime::Outputs::into_vec).map_err(run_error)
    }
}

#[pymethods]
impl Model {
    /// `run({name: array})` returns `{name: array}` for every output; onnxruntime's
    /// `run(output_names, input_feed)` returns a list of arrays, all outputs when output_names is None.
    #[pyo3(signature = (output_names = None, input_feed = None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        output_names: Option<&Bound<'py, PyAny>>,
        input_feed: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let as_feeds = |v: &Bound<'py, PyAny>| -> PyResult<Bound<'py, PyDict>> {
            v.cast::<PyDict>().cloned().map_err(|_| {
                PyTypeError::new_err(format!("feeds must be a dict of name to numpy array, got {}", type_name(v)))
            })
        };
        match (output_names, input_feed) {
            (Some(feeds), None) if feeds.is_instance_of::<PyDict>() => {
                let outputs = self.execute(py, &as_feeds(feeds)?)?;
                let result = PyDict::new(py);
                for (spec, t) in self.inner.plan().outputs.iter().zip(&outputs) {
                    result.set_item(&spec.name, to_numpy(py, t))?;
                }
                Ok(result.into_any())
            }
            (names, Some(feeds)) => {
                let none = py.None().into_bound(py);
                let indices = self.output_indices(names.unwrap_or(&none))?;
                let outputs = self.execute(py, &as_feeds(feeds)?)?;
                let arrays = indices.iter().map(|&i| to_numpy(py, &outputs[i]));
                Ok(PyList::new(py, arrays)?.into_any())
            }
            _ => {
                Err(PyTypeError::new_err("run takes the feeds: run({name: array}) or run(output_names, {name: array})"))
            }
        }
    }

    /// onnxruntime's name for `inputs`.
    fn get_inputs(&self) -> Vec<NodeArg> {
        self.inputs.clone()
    }

    /// onnxruntime's name for `outputs`.
    fn get_outputs(&self) -> Vec<NodeArg> {
        self.outputs.clone()
    }

    /// Worker threads a run uses.
    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads()
    }

    /// Writes the compiled model as an `.incept` artifact, which `incept.load` (or any program
    /// linking incept's runtime) loads without compiling; signed with the secret key file
    /// `signing_key` (from `incept keygen`) when given.
    #[pyo3(signature = (path, signing_key = None))]
    fn save(&self, py: Python<'_>, path: PathBuf, signing_key: Option<PathBuf>) -> PyResult<()> {
        let key = match signing_key {
            Some(file) => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| incept_error(format!("cannot read the signing key '{}': {e}", file.display())))?;
                Some(
                    incept_runtime::signature::SecretKey::from_text(&text)
                        .map_err(|e| incept_error(format!("'{}': {e}", file.display())))?,
                )
            }
            None => None,
        };
        let model = Arc::clone(&self.inner);
        let info = self.info.clone();
        py.detach(move || {
            // A failure leaves whatever was at `path` untouched.
            artifact::save_signed(model.plan(), &info, &path, key.as_ref()).map_err(|e| incept_error(e.to_string()))
        })
    }

    fn __repr__(&self) -> String {
        let list = |specs: &[IoSpec]| {
            specs
                .iter()
                .map(|s| format!("{}: {}", s.name, type_string(numpy_name(s.dtype), &s.shape)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let plan = self.inner.plan();
        format!("incept.Model(inputs=[{}], outputs=[{}])", list(&plan.inputs), list(&plan.outputs))
    }
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// Loads a compiled `.incept` artifact. An artifact is native code: load only files you trust;
/// with `trusted_key` (the path of a `.pub` file from `incept keygen`, or its 32 key bytes), only
/// an artifact signed by that key loads.
#[pyfunction]
#[pyo3(signature = (path, threads = 0, trusted_key = None))]
pub fn load(py: Python<'_>, path: PathBuf, threads: i64, trusted_key: Option<&Bound<'_, PyAny>>) -> PyResult<Model> {
    let threads = crate::compile::count("threads", threads)?;
    let mut options = artifact::LoadOptions::default();
    if let Some(k) = trusted_key {
        let key = if let Ok(bytes) = k.extract::<Vec<u8>>() {
            let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
                PyValueError::new_err(format!("trusted_key holds {} bytes; an Ed25519 public key has 32", b.len()))
            })?;
            incept_runtime::signature::PublicKey(bytes)
        } else {
            let file: PathBuf = k.extract().map_err(|_| {
                PyTypeError::new_err("trusted_key must be the path of a .pub key file or its 32 key bytes")
            })?;
            let text = std::fs::read_to_string(&file)
                .map_err(|e| incept_error(format!("cannot read the key '{}': {e}", file.display())))?;
            incept_runtime::signature::PublicKey::from_text(&text)
                .map_err(|e| incept_error(format!("'{}': {e}", file.display())))?
        };
        options.trusted_keys.push(key);
    }
    py.detach(move || {
        let (plan, info) = artifact::load_with(&path, &options).map_err(|e| match e {
            // Already names the file.
            ArtifactError::Io { .. } => incept_error(e),
            e => incept_error(format!("cannot load '{}': {e}", path.display())),
        })?;
        let model = incept_runtime::Model::new(plan, &RunOptions { threads })
            .map_err(|e| incept_error(format!("cannot load '{}': {e}", path.display())))?;
        Ok(Model::new(model, info))
    })
}
