//! `TensorProto` -> [`Tensor`], with raw, typed-field and external data, and every size checked
//! against the data actually present before anything is allocated.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::onnx::proto::{TensorProto, data_location};
use crate::tensor::{Tensor, checked_numel};

/// Maps a file read-only and wraps it as `Bytes` without copying.
pub fn map_file(path: &Path) -> Result<Bytes> {
    let io = |error| Error::Io { path: path.to_path_buf(), error };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the mapping is read-only. Like every mmap-based loader, this assumes nobody
    // truncates or rewrites the model file while it is loaded.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    Ok(Bytes::from_owner(map))
}

/// Resolves `external_data` locations relative to the model's folder, refusing paths that leave
/// it, and maps each file once.
pub struct ExternalData {
    dir: Option<PathBuf>,
    files: RefCell<HashMap<PathBuf, Bytes>>,
}

impl ExternalData {
    pub fn new(dir: Option<PathBuf>) -> ExternalData {
        ExternalData { dir, files: RefCell::new(HashMap::new()) }
    }

    fn load(&self, tensor: &str, location: &str, offset: u64, length: Option<u64>) -> Result<Bytes> {
        let err = |msg: String| Error::ExternalData { tensor: tensor.to_string(), msg };
        let Some(dir) = &self.dir else {
            return Err(err(
                "the model was loaded from memory, so external data files cannot be resolved; load it from its path"
                    .into(),
            ));
        };
        let rel = Path::new(location);
        if location.is_empty() {
            return Err(err("empty location".into()));
        }
        if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            return Err(err(format!(
                "location '{location}' must be a relative path inside the model's folder (no absolute paths, no '..')"
            )));
        }
        let path = dir.join(rel);
        let canon_dir = dir.canonicalize().map_err(|e| err(format!("cannot resolve the model folder: {e}")))?;
        let canon = path.canonicalize().map_err(|e| err(format!("cannot open '{}': {e}", path.display())))?;
        if !canon.starts_with(&canon_dir) {
            return Err(err(format!("location '{location}' resolves outside the model's folder")));
        }
        let bytes = {
            let mut files = self.files.borrow_mut();
            match files.get(&canon) {
                Some(b) => b.clone(),
                None => {
                    let b = map_file(&canon)?;
                    files.insert(canon.clone(), b.clone());
                    b
                }
            }
        };
        let len = bytes.len() as u64;
        let length = length.unwrap_or(len.saturating_sub(offset));
        let end = offset.checked_add(length).filter(|&e| e <= len).ok_or_else(|| {
            err(format!("offset {offset} + length {length} is beyond the end of '{location}' ({len} bytes)"))
        })?;
        Ok(bytes.slice(offset as usize..end as usize))
    }
}

fn bytes_of<T: bytemuck::Pod + Send + Sync + 'static>(v: Vec<T>) -> Bytes {
    struct Owner<T: bytemuck::Pod>(Vec<T>);
    impl<T: bytemuck::Pod> AsRef<[u8]> for Owner<T> {
        fn as_ref(&self) -> &[u8] {
            bytemuck::cast_slice(&self.0)
        }
    }
    Bytes::from_owner(Owner(v))
}

/// Converts a `TensorProto` (initializer, attribute or test data) into a tensor.
pub fn tensor_from_proto(t: &TensorProto, ext: &ExternalData) -> Result<Tensor> {
    let name = if t.name.is_empty() { "<unnamed>" } else { &t.name };
    let bad = |msg: String| Error::Model(format!("tensor '{name}': {msg}"));
    let dtype = DType::from_onnx(t.data_type)
        .ok_or_else(|| bad(format!("element type {} is not supported", DType::onnx_code_name(t.data_type))))?;
    if t.segment.is_some() {
        return Err(bad("segmented tensors are not supported".into()));
    }
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(bad(format!("negative dimension {d} in {:?}", t.dims)));
        }
        dims.push(d as usize);
    }
    let numel =
        checked_numel(&dims).ok_or_else(|| bad(format!("shape {:?} claims more than 2^31 elements", t.dims)))?;
    let nbytes = numel * dtype.size();
    let wrap = |data: Bytes| Tensor::from_bytes(dtype, dims.clone(), data).map_err(|e| bad(e.to_string()));
    if t.data_location == data_location::EXTERNAL {
        let mut location = None;
        let (mut offset, mut length) = (0u64, None);
        for kv in &t.external_data {
            let num = || {
                kv.value
                    .parse::<u64>()
                    .map_err(|_| bad(format!("external_data {} '{}' is not a number", kv.key, kv.value)))
            };
            match kv.key.as_str() {
                "location" => location = Some(kv.value.clone()),
                "offset" => offset = num()?,
                "length" => length = Some(num()?),
                _ => {}
            }
        }
        let location = location.ok_or_else(|| bad("external data without a location".into()))?;
        let data = ext.load(name, &location, offset, length)?;
        if data.len() != nbytes {
            return Err(Error::ExternalData {
                tensor: name.to_string(),
                msg: format!("{} bytes at '{location}' but shape {:?} of {dtype} needs {nbytes}", data.len(), t.dims),
            });
        }
        return wrap(data);
    }
    if !t.raw_data.is_empty() || numel == 0 {
        if t.raw_data.len() != nbytes {
            return Err(bad(format!(
                "raw_data has {} bytes, shape {:?} of {dtype} needs {nbytes}",
                t.raw_data.len(),
                t.dims
            )));
        }
        return wrap(t.raw_data.clone());
    }
    let count = |n: usize, field: &str| -> Result<()> {
        if n != numel {
            return Err(bad(format!("{field} has {n} values, shape {:?} needs {numel}", t.dims)));
        }
        Ok(())
    };
    let data = match dtype {
        DType::F32 => {
            count(t.float_data.len(), "float_data")?;
            bytes_of(t.float_data.clone())
        }
        DType::F64 => {
            count(t.double_data.len(), "double_data")?;
            bytes_of(t.double_data.clone())
        }
        DType::I64 => {
            count(t.int64_data.len(), "int64_data")?;
            bytes_of(t.int64_data.clone())
        }
        DType::U32 | DType::U64 => {
            count(t.uint64_data.len(), "uint64_data")?;
            if dtype == DType::U32 {
                bytes_of(t.uint64_data.iter().map(|&v| v as u32).collect::<Vec<u32>>())
            } else {
                bytes_of(t.uint64_data.clone())
            }
        }
        DType::I32 => {
            count(t.int32_data.len(), "int32_data")?;
            bytes_of(t.int32_data.clone())
        }
        // Narrow types are stored one per int32 entry.
        DType::I8 | DType::U8 | DType::Bool => {
            count(t.int32_data.len(), "int32_data")?;
            bytes_of(t.int32_data.iter().map(|&v| v as u8).collect::<Vec<u8>>())
        }
        DType::I16 | DType::U16 | DType::F16 => {
            count(t.int32_data.len(), "int32_data")?;
            bytes_of(t.int32_data.iter().map(|&v| v as u16).collect::<Vec<u16>>())
        }
    };
    wrap(data)
}
