//! Tensors at the runtime's boundary: a dtype, a shape, 64-byte aligned little-endian bytes.

use std::fmt;

use crate::buffer::AlignedBuf;

/// Element types the runtime passes in and out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    I32,
    I64,
    U8,
    I8,
    Bool,
    I16,
    U16,
    U32,
    U64,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::I16 | DType::U16 => 2,
            DType::U8 | DType::I8 | DType::Bool => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::Bool => "bool",
            DType::I16 => "i16",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::U64 => "u64",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dense row-major tensor owned by the caller or returned by a run.
#[derive(Clone, Debug)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: AlignedBuf,
}

impl Tensor {
    /// A zeroed tensor.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor { dtype, shape: shape.to_vec(), data: AlignedBuf::zeroed(n * dtype.size()) }
    }

    /// A tensor from raw little-endian bytes; `None` when the length does not match the shape.
    pub fn from_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Option<Tensor> {
        let n: usize = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        (n.checked_mul(dtype.size())? == bytes.len()).then(|| Tensor {
            dtype,
            shape: shape.to_vec(),
            data: AlignedBuf::from_bytes(bytes),
        })
    }

    /// An f32 tensor; `None` when `values.len()` does not match the shape.
    pub fn from_f32(shape: &[usize], values: &[f32]) -> Option<Tensor> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::from_bytes(DType::F32, shape, &bytes)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn bytes(&self) -> &[u8] {
        self.data.as_slice()
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.data.as_mut_slice()
    }

    /// The elements of an f32 tensor.
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        (self.dtype == DType::F32)
            .then(|| self.bytes().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.data.as_ptr()
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.data.as_mut_ptr()
    }

    /// "f32[1,3,224,224]"
    pub fn type_string(&self) -> String {
        format!("{}[{}]", self.dtype, self.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","))
    }
}
