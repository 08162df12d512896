//! Reading and writing NumPy `.npy` files (little-endian, C order).

use std::path::Path;

use bytes::Bytes;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, checked_numel};

fn descr_dtype(d: &str) -> Option<DType> {
    Some(match d {
        "<f4" => DType::F32,
        "<f8" => DType::F64,
        "<f2" => DType::F16,
        "<i8" => DType::I64,
        "<i4" => DType::I32,
        "<i2" => DType::I16,
        "|i1" | "<i1" => DType::I8,
        "|u1" | "<u1" => DType::U8,
        "<u2" => DType::U16,
        "<u4" => DType::U32,
        "<u8" => DType::U64,
        "|b1" | "<b1" => DType::Bool,
        _ => return None,
    })
}

fn dtype_descr(d: DType) -> &'static str {
    match d {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::I16 => "<i2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
    }
}

/// Finds `'key': value` in the header dict and returns the raw value text.
fn header_field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let k = header.find(&format!("'{key}'"))?;
    let rest = header[k + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find([',', '}']).unwrap_or(rest.len()) };
    Some(rest[..end].trim())
}

/// Parses `.npy` bytes.
pub fn parse(data: Bytes, what: &str) -> Result<Tensor> {
    let bad = |msg: String| Error::Input { name: what.to_string(), msg: format!("not a valid .npy file: {msg}") };
    if data.len() < 10 || &data[..6] != b"\x93NUMPY" {
        return Err(bad("missing the \\x93NUMPY magic".into()));
    }
    let major = data[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([data[8], data[9]]) as usize, 10usize),
        2 | 3 => {
            if data.len() < 12 {
                return Err(bad("truncated header".into()));
            }
            (u32::from_le_bytes([data[8], data[9], data[10], data[11]]) as usize, 12)
        }
        v => return Err(bad(format!("unknown format version {v}"))),
    };
    let end = start.checked_add(hlen).filter(|&e| e <= data.len()).ok_or_else(|| bad("truncated header".into()))?;
    let header = std::str::from_utf8(&data[start..end]).map_err(|_| bad("header is not text".into()))?;
    let descr =
        header_field(header, "descr").ok_or_else(|| bad("no 'descr' in header".into()))?.trim_matches(['\'', '"']);
    let dtype = descr_dtype(descr)
        .ok_or_else(|| bad(format!("element type '{descr}' is not supported (little-endian numeric types only)")))?;
    let fortran = header_field(header, "fortran_order").ok_or_else(|| bad("no 'fortran_order' in header".into()))?;
    if fortran != "False" {
        return Err(bad("Fortran-ordered arrays are not supported; save with np.ascontiguousarray".into()));
    }
    let shape_txt = header_field(header, "shape").ok_or_else(|| bad("no 'shape' in header".into()))?;
    let shape: Vec<usize> = shape_txt
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad(format!("bad shape {shape_txt}"))))
        .collect::<Result<_>>()?;
    let numel = checked_numel(&shape).ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
    let body = data.slice(end..);
    if body.len() != numel * dtype.size() {
        return Err(bad(format!(
            "shape {shape:?} of {dtype} needs {} bytes of data, the file has {}",
            numel * dtype.size(),
            body.len()
        )));
    }
    Tensor::from_bytes(dtype, shape, body).map_err(|e| bad(e.to_string()))
}

/// Reads a `.npy` file.
pub fn read(path: &Path) -> Result<Tensor> {
    let data = std::fs::read(path).map_err(|error| Error::Io { path: path.to_path_buf(), error })?;
    parse(Bytes::from(data), &path.display().to_string())
}

/// Serialises a tensor as `.npy` (format 1.0).
pub fn to_bytes(t: &Tensor) -> Vec<u8> {
    let shape = match t.shape() {
        [d] => format!("({d},)"),
        s => format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", dtype_descr(t.dtype()));
    // Pad so that the data starts at a multiple of 64 bytes, ending the header with a newline.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.bytes().len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(t.bytes());
    out
}

/// Writes a tensor to a `.npy` file.
pub fn write(path: &Path, t: &Tensor) -> Result<()> {
    std::fs::write(path, to_bytes(t)).map_err(|error| Error::Io { path: path.to_path_buf(), error })
}
