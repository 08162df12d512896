//! numpy arrays to runtime tensors and back. Both directions copy: an input is copied while the
//! GIL is held, so the run itself touches no Python object and can release it.

use incept_runtime::{DType, Tensor};
use numpy::{Element, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// Runs `$body` with `$t` bound to the Rust element type of a runtime dtype (one arm per dtype
/// the runtime passes in and out).
macro_rules! with_element {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $t = f32;
                $body
            }
            DType::F64 => {
                type $t = f64;
                $body
            }
            DType::I32 => {
                type $t = i32;
                $body
            }
            DType::I64 => {
                type $t = i64;
                $body
            }
            DType::U8 => {
                type $t = u8;
                $body
            }
            DType::I8 => {
                type $t = i8;
                $body
            }
            DType::Bool => {
                type $t = bool;
                $body
            }
            DType::I16 => {
                type $t = i16;
                $body
            }
            DType::U16 => {
                type $t = u16;
                $body
            }
            DType::U32 => {
                type $t = u32;
                $body
            }
            DType::U64 => {
                type $t = u64;
                $body
            }
        }
    };
}

/// The numpy name of a runtime dtype ('float32'), as `str(array.dtype)` prints it.
pub fn numpy_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "float32",
        DType::F64 => "float64",
        DType::I32 => "int32",
        DType::I64 => "int64",
        DType::U8 => "uint8",
        DType::I8 => "int8",
        DType::Bool => "bool",
        DType::I16 => "int16",
        DType::U16 => "uint16",
        DType::U32 => "uint32",
        DType::U64 => "uint64",
    }
}

/// The ONNX type string onnxruntime's `NodeArg.type` shows ('tensor(float)').
pub fn onnx_type(d: DType) -> &'static str {
    match d {
        DType::F32 => "tensor(float)",
        DType::F64 => "tensor(double)",
        DType::I32 => "tensor(int32)",
        DType::I64 => "tensor(int64)",
        DType::U8 => "tensor(uint8)",
        DType::I8 => "tensor(int8)",
        DType::Bool => "tensor(bool)",
        DType::I16 => "tensor(int16)",
        DType::U16 => "tensor(uint16)",
        DType::U32 => "tensor(uint32)",
        DType::U64 => "tensor(uint64)",
    }
}

/// "float32[1,3,32,32]": how feed errors show a type.
pub fn type_string(dtype: &str, shape: &[usize]) -> String {
    format!("{dtype}[{}]", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","))
}

/// A feed value as a tensor of the `expected` dtype and shape; errors name the input and say
/// what was expected and what was given.
pub fn to_tensor(name: &str, value: &Bound<'_, PyAny>, expected: (DType, &[usize])) -> PyResult<Tensor> {
    let py = value.py();
    let array = value.cast::<PyUntypedArray>().map_err(|_| {
        let ty = value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
        PyTypeError::new_err(format!("input '{name}': expected a numpy array, got {ty}"))
    })?;
    let descr = array.dtype();
    let dtype = DType::ALL.into_iter().find(|&d| with_element!(d, T => descr.is_equiv_to(&numpy::dtype::<T>(py))));
    let got_dtype = descr.str().map(|s| s.to_string()).unwrap_or_else(|_| "?".into());
    let (want_dtype, want_shape) = expected;
    if dtype != Some(want_dtype) || array.shape() != want_shape {
        return Err(PyValueError::new_err(format!(
            "input '{name}': expected {}, got {}",
            type_string(numpy_name(want_dtype), want_shape),
            type_string(&got_dtype, array.shape())
        )));
    }
    // Strided views (a transpose, a slice) are copied into row-major order, as numpy would.
    let contiguous = if array.is_c_contiguous() {
        array.clone().into_any()
    } else {
        py.import("numpy")?.call_method1("ascontiguousarray", (array,))?
    };
    with_element!(want_dtype, T => copy_in::<T>(name, &contiguous, want_dtype))
}

fn copy_in<T: Element>(name: &str, array: &Bound<'_, PyAny>, dtype: DType) -> PyResult<Tensor> {
    let typed = array.cast::<PyArrayDyn<T>>()?;
    let view = typed.try_readonly().map_err(|e| PyValueError::new_err(format!("input '{name}': {e}")))?;
    let values = view.as_slice().map_err(|e| PyValueError::new_err(format!("input '{name}': {e}")))?;
    // SAFETY: the element types the runtime takes are plain numbers (bool is one byte), so their
    // memory is `size_of_val(values)` initialised bytes, in the host's (little-endian) order.
    let bytes = unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), size_of_val(values)) };
    Tensor::from_bytes(dtype, view.shape(), bytes).map_err(|e| PyValueError::new_err(format!("input '{name}': {e}")))
}

/// A run's output as a new numpy array.
pub fn to_numpy<'py>(py: Python<'py>, t: &Tensor) -> Bound<'py, PyAny> {
    with_element!(t.dtype(), T => copy_out::<T>(py, t))
}

fn copy_out<'py, T: Element>(py: Python<'py>, t: &Tensor) -> Bound<'py, PyAny> {
    let array = PyArrayDyn::<T>::zeros(py, t.shape(), false);
    let bytes = t.bytes();
    let n = bytes.len().min(t.numel() * size_of::<T>());
    // SAFETY: the new array is C-contiguous with the tensor's shape, so it holds at least `n`
    // bytes, and nothing else refers to it yet.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), array.data().cast::<u8>(), n) };
    array.into_any()
}
