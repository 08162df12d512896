//! NumPy `.npy` files (format 1.0 to 3.0, little-endian, C order): the one place incept reads and
//! writes them (the IR crate uses the header functions here too), so that an application linking
//! only the runtime can load its inputs and save its outputs.

use std::path::{Path, PathBuf};

use crate::tensor::{DType, Tensor};

/// Why a `.npy` file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{what}: not a valid .npy file: {msg}")]
    Invalid { what: String, msg: String },
    #[error("{what}: element type '{descr}' is not supported (little-endian numeric types only)")]
    Unsupported { what: String, descr: String },
    #[error("cannot {action} '{}': {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
}

/// The parsed header of a `.npy` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// NumPy's type string, e.g. `<f4`.
    pub descr: String,
    pub shape: Vec<usize>,
    /// Where the data starts.
    pub data_offset: usize,
}

/// The runtime dtype of a NumPy type string.
pub fn descr_dtype(descr: &str) -> Option<DType> {
    Some(match descr {
        "<f4" => DType::F32,
        "<f8" => DType::F64,
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

/// The NumPy type string of a runtime dtype.
pub fn dtype_descr(d: DType) -> &'static str {
    match d {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
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

/// Parses the header of `.npy` bytes; the error message says what is wrong (without a name).
pub fn parse_header(data: &[u8]) -> Result<Header, String> {
    if data.len() < 10 || &data[..6] != b"\x93NUMPY" {
        return Err("missing the \\x93NUMPY magic".into());
    }
    let (hlen, start) = match data[6] {
        1 => (u16::from_le_bytes([data[8], data[9]]) as usize, 10usize),
        2 | 3 => {
            if data.len() < 12 {
                return Err("truncated header".into());
            }
            (u32::from_le_bytes([data[8], data[9], data[10], data[11]]) as usize, 12)
        }
        v => return Err(format!("unknown format version {v}")),
    };
    let end = start.checked_add(hlen).filter(|&e| e <= data.len()).ok_or("truncated header")?;
    let header = std::str::from_utf8(&data[start..end]).map_err(|_| "header is not text")?;
    let descr = header_field(header, "descr").ok_or("no 'descr' in header")?.trim_matches(['\'', '"']);
    let fortran = header_field(header, "fortran_order").ok_or("no 'fortran_order' in header")?;
    if fortran != "False" {
        return Err("Fortran-ordered arrays are not supported; save with np.ascontiguousarray".into());
    }
    let shape_txt = header_field(header, "shape").ok_or("no 'shape' in header")?;
    let shape = shape_txt
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad shape {shape_txt}")))
        .collect::<Result<Vec<usize>, String>>()?;
    Ok(Header { descr: descr.to_string(), shape, data_offset: end })
}

/// Checks that the data after the header holds exactly `shape` elements of `elem_size` bytes.
pub fn check_body(h: &Header, data_len: usize, elem_size: usize) -> Result<(), String> {
    let need = h.shape.iter().try_fold(elem_size, |a, &d| a.checked_mul(d));
    let have = data_len - h.data_offset.min(data_len);
    match need {
        Some(n) if n == have => Ok(()),
        Some(n) => Err(format!("shape {:?} ({}) needs {n} bytes of data, the file has {have}", h.shape, h.descr)),
        None => Err(format!("shape {:?} is too large", h.shape)),
    }
}

/// The header (format 1.0) for a tensor of `descr` and `shape`, padded so that the data starts at
/// a multiple of 64 bytes.
pub fn header_bytes(descr: &str, shape: &[usize]) -> Vec<u8> {
    let shape = match shape {
        [d] => format!("({d},)"),
        s => format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// Parses `.npy` bytes into a tensor; `what` names the data in errors (e.g. the file).
pub fn from_bytes(data: &[u8], what: &str) -> Result<Tensor, NpyError> {
    let invalid = |msg: String| NpyError::Invalid { what: what.to_string(), msg };
    let h = parse_header(data).map_err(invalid)?;
    let dtype = descr_dtype(&h.descr)
        .ok_or_else(|| NpyError::Unsupported { what: what.to_string(), descr: h.descr.clone() })?;
    check_body(&h, data.len(), dtype.size()).map_err(invalid)?;
    Tensor::from_bytes(dtype, &h.shape, &data[h.data_offset..]).map_err(|e| invalid(e.to_string()))
}

/// Serialises a tensor as `.npy` (format 1.0).
pub fn to_bytes(t: &Tensor) -> Vec<u8> {
    let mut out = header_bytes(dtype_descr(t.dtype()), t.shape());
    out.extend_from_slice(t.bytes());
    out
}

/// Reads a `.npy` file.
pub fn read(path: impl AsRef<Path>) -> Result<Tensor, NpyError> {
    let path = path.as_ref();
    let data =
        std::fs::read(path).map_err(|source| NpyError::Io { action: "read", path: path.to_path_buf(), source })?;
    from_bytes(&data, &path.display().to_string())
}

/// Writes a tensor to a `.npy` file; a failure leaves whatever was at `path` untouched.
pub fn write(path: impl AsRef<Path>, t: &Tensor) -> Result<(), NpyError> {
    let path = path.as_ref();
    crate::file::write_atomic(path, &to_bytes(t)).map_err(|source| NpyError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_dtype_and_rank() {
        for d in DType::ALL {
            for shape in [vec![], vec![3], vec![2, 3], vec![1, 2, 0, 4]] {
                let n: usize = shape.iter().product();
                let bytes: Vec<u8> = (0..n * d.size()).map(|i| (i % 2) as u8).collect();
                let t = Tensor::from_bytes(d, &shape, &bytes).unwrap();
                let file = to_bytes(&t);
                assert_eq!(parse_header(&file).unwrap().data_offset % 64, 0);
                let back = from_bytes(&file, "t").unwrap();
                assert_eq!((back.dtype(), back.shape(), back.bytes()), (d, &shape[..], &bytes[..]), "{d} {shape:?}");
            }
        }
    }

    #[test]
    fn refuses_bad_files_with_the_reason() {
        let good = to_bytes(&Tensor::from_f32(&[2], &[1.0, 2.0]).unwrap());
        let msg = |b: &[u8]| from_bytes(b, "x.npy").unwrap_err().to_string();
        assert!(msg(b"hello").contains("magic"));
        assert!(msg(&good[..good.len() - 1]).contains("needs 8 bytes of data, the file has 7"));
        assert!(msg(&good[..20]).contains("truncated header"));
        let replace = |from: &[u8], to: &[u8]| {
            let at = good.windows(from.len()).position(|w| w == from).unwrap();
            let mut b = good.clone();
            b[at..at + to.len()].copy_from_slice(to);
            b
        };
        let f2 = replace(b"<f4", b"<f2");
        assert!(msg(&f2).contains("'<f2' is not supported"), "{}", msg(&f2));
        let fortran = replace(b"False", b"True ");
        assert!(msg(&fortran).contains("Fortran"));
        // Every truncation is an error, never a panic.
        for n in 0..good.len() {
            assert!(from_bytes(&good[..n], "x").is_err());
        }
    }
}
