//! Reading and writing NumPy `.npy` files (little-endian, C order).

use std::path::Path;

use bytes::Bytes;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

use incept_runtime::npy as format;

/// The IR dtype of a NumPy type string: the runtime's types plus f16, which only the IR holds.
fn descr_dtype(d: &str) -> Option<DType> {
    if d == "<f2" {
        return Some(DType::F16);
    }
    format::descr_dtype(d).map(DType::from)
}

fn dtype_descr(d: DType) -> &'static str {
    match incept_runtime::DType::try_from(d) {
        Ok(r) => format::dtype_descr(r),
        Err(_) => "<f2",
    }
}

/// Parses `.npy` bytes.
pub fn parse(data: Bytes, what: &str) -> Result<Tensor> {
    let bad = |msg: String| Error::Input { name: what.to_string(), msg: format!("not a valid .npy file: {msg}") };
    let h = format::parse_header(&data).map_err(bad)?;
    let dtype = descr_dtype(&h.descr).ok_or_else(|| {
        bad(format!("element type '{}' is not supported (little-endian numeric types only)", h.descr))
    })?;
    format::check_body(&h, data.len(), dtype.size()).map_err(bad)?;
    let body = data.slice(h.data_offset..);
    Tensor::from_bytes(dtype, h.shape, body).map_err(|e| bad(e.to_string()))
}

/// Reads a `.npy` file.
pub fn read(path: &Path) -> Result<Tensor> {
    let data = std::fs::read(path).map_err(|error| Error::Io { path: path.to_path_buf(), error })?;
    parse(Bytes::from(data), &path.display().to_string())
}

/// Serialises a tensor as `.npy` (format 1.0).
pub fn to_bytes(t: &Tensor) -> Vec<u8> {
    let mut out = format::header_bytes(dtype_descr(t.dtype()), t.shape());
    out.extend_from_slice(t.bytes());
    out
}

/// Writes a tensor to a `.npy` file; a failure leaves whatever was at `path` untouched.
pub fn write(path: &Path, t: &Tensor) -> Result<()> {
    incept_runtime::file::write_atomic(path, &to_bytes(t))
        .map_err(|error| Error::Write { path: path.to_path_buf(), error })
}
