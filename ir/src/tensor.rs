//! Dense tensors: a dtype, a shape and little-endian bytes.
//!
//! The bytes are a `bytes::Bytes`, so a weight decoded from a memory-mapped model file shares the
//! mapping instead of being copied, and cloning a tensor is a reference-count bump. Weights may start
//! at any offset in the file, so typed views copy only when the bytes happen to be misaligned.

use std::borrow::Cow;
use std::fmt;

use bytemuck::Pod;
use bytes::Bytes;

use crate::dtype::DType;

#[cfg(target_endian = "big")]
compile_error!("incept stores tensors as little-endian bytes and assumes a little-endian host");

/// Rust types that can be the elements of a tensor.
pub trait Element: Pod + Copy + Default + PartialEq + PartialOrd + fmt::Debug + Send + Sync + 'static {
    const DTYPE: DType;
}

macro_rules! element {
    ($($t:ty => $d:ident),*) => { $(impl Element for $t { const DTYPE: DType = DType::$d; })* };
}
element!(f32 => F32, f64 => F64, u8 => U8, i8 => I8, u16 => U16, i16 => I16, i32 => I32, i64 => I64, u32 => U32, u64 => U64);

/// Why a tensor could not be built or viewed.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum TensorError {
    #[error("tensor of shape {shape:?} and type {dtype} needs {expected} bytes but has {got}")]
    ByteLength { dtype: DType, shape: Vec<usize>, expected: usize, got: usize },
    #[error("tensor shape {0:?} has too many elements")]
    TooLarge(Vec<usize>),
    #[error("expected a {expected} tensor, found {got}")]
    DType { expected: DType, got: DType },
    #[error("the runtime does not take or return {0} tensors")]
    NotInRuntime(DType),
}

/// An IR tensor as the runtime's (copied into its 64-byte aligned buffer).
impl TryFrom<&Tensor> for incept_runtime::Tensor {
    type Error = TensorError;
    fn try_from(t: &Tensor) -> Result<incept_runtime::Tensor, TensorError> {
        let d = incept_runtime::DType::try_from(t.dtype()).map_err(TensorError::NotInRuntime)?;
        incept_runtime::Tensor::from_bytes(d, t.shape(), t.bytes()).map_err(|_| TensorError::ByteLength {
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
            expected: t.numel() * t.dtype().size(),
            got: t.bytes().len(),
        })
    }
}

/// A runtime tensor (a model's output) as an IR tensor.
impl From<&incept_runtime::Tensor> for Tensor {
    fn from(t: &incept_runtime::Tensor) -> Tensor {
        Tensor { dtype: t.dtype().into(), shape: t.shape().to_vec(), data: Bytes::copy_from_slice(t.bytes()) }
    }
}

/// Largest number of elements a tensor may claim (2^31: 8 GiB of f32, far above any CNN
/// activation). Larger claims are refused before anything is allocated.
pub const MAX_ELEMENTS: usize = 1 << 31;

/// Number of elements of a shape, or `None` when it overflows or exceeds [`MAX_ELEMENTS`].
/// An empty dim does not excuse the others: the product of the nonzero dims must fit as well, so
/// that every partial product of a shape (strides, flattened sizes, byte offsets) does too.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    let nonzero = nonzero_numel(shape.iter().copied())?;
    Some(if shape.contains(&0) { 0 } else { nonzero })
}

/// The product of the nonzero dims, or `None` when it exceeds [`MAX_ELEMENTS`].
pub fn nonzero_numel(dims: impl IntoIterator<Item = usize>) -> Option<usize> {
    dims.into_iter().filter(|&d| d != 0).try_fold(1usize, |acc, d| acc.checked_mul(d)).filter(|&n| n <= MAX_ELEMENTS)
}

struct VecOwner<T: Pod>(Vec<T>);

impl<T: Pod> AsRef<[u8]> for VecOwner<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// A dense, row-major tensor.
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Bytes,
}

impl Tensor {
    /// Wraps raw little-endian bytes, checking their length against the shape.
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, data: Bytes) -> Result<Tensor, TensorError> {
        let numel = checked_numel(&shape).ok_or_else(|| TensorError::TooLarge(shape.clone()))?;
        let expected = numel * dtype.size();
        if data.len() != expected {
            return Err(TensorError::ByteLength { dtype, shape, expected, got: data.len() });
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// Builds a tensor that owns `values`. The caller guarantees `values.len()` matches `shape`.
    pub fn from_vec<T: Element>(shape: Vec<usize>, values: Vec<T>) -> Tensor {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "tensor shape and data disagree");
        Tensor { dtype: T::DTYPE, shape, data: Bytes::from_owner(VecOwner(values)) }
    }

    /// A boolean tensor (one byte per element, 0 or 1).
    pub fn from_bools(shape: Vec<usize>, values: Vec<bool>) -> Tensor {
        let bytes: Vec<u8> = values.into_iter().map(u8::from).collect();
        assert_eq!(shape.iter().product::<usize>(), bytes.len(), "tensor shape and data disagree");
        Tensor { dtype: DType::Bool, shape, data: Bytes::from(bytes) }
    }

    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor::from_vec(vec![], vec![v])
    }

    /// A tensor of the given type filled with zero bytes.
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        let numel = checked_numel(&shape).ok_or_else(|| TensorError::TooLarge(shape.clone()))?;
        Ok(Tensor { dtype, shape, data: Bytes::from(vec![0u8; numel * dtype.size()]) })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The raw little-endian bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.data
    }

    /// The same data under another shape with the same element count.
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        Tensor::from_bytes(self.dtype, shape, self.data.clone())
    }

    /// A typed view of the elements; borrows when the bytes are aligned for `T`, copies otherwise.
    pub fn view<T: Element>(&self) -> Result<Cow<'_, [T]>, TensorError> {
        if self.dtype != T::DTYPE {
            return Err(TensorError::DType { expected: T::DTYPE, got: self.dtype });
        }
        Ok(match bytemuck::try_cast_slice::<u8, T>(&self.data) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(&self.data)),
        })
    }

    /// The elements of a boolean tensor as bytes (0 or 1).
    pub fn view_bool(&self) -> Result<&[u8], TensorError> {
        if self.dtype != DType::Bool {
            return Err(TensorError::DType { expected: DType::Bool, got: self.dtype });
        }
        Ok(&self.data)
    }

    /// Integer elements widened to i64 (for shapes, axes and indices, whichever int type they use).
    pub fn to_i64s(&self) -> Result<Vec<i64>, TensorError> {
        Ok(match self.dtype {
            DType::I64 => self.view::<i64>()?.into_owned(),
            DType::I32 => self.view::<i32>()?.iter().map(|&v| v as i64).collect(),
            DType::I16 => self.view::<i16>()?.iter().map(|&v| v as i64).collect(),
            DType::I8 => self.view::<i8>()?.iter().map(|&v| v as i64).collect(),
            DType::U8 => self.view::<u8>()?.iter().map(|&v| v as i64).collect(),
            DType::U16 => self.view::<u16>()?.iter().map(|&v| v as i64).collect(),
            DType::U32 => self.view::<u32>()?.iter().map(|&v| v as i64).collect(),
            DType::U64 => self.view::<u64>()?.iter().map(|&v| v as i64).collect(),
            other => return Err(TensorError::DType { expected: DType::I64, got: other }),
        })
    }

    /// Elements converted to f64, for any numeric dtype except f16 (used for scalars such as clip
    /// bounds and pad values).
    pub fn to_f64s(&self) -> Result<Vec<f64>, TensorError> {
        Ok(match self.dtype {
            DType::F32 => self.view::<f32>()?.iter().map(|&v| v as f64).collect(),
            DType::F64 => self.view::<f64>()?.into_owned(),
            DType::Bool => self.data.iter().map(|&b| b as f64).collect(),
            DType::F16 => return Err(TensorError::DType { expected: DType::F32, got: DType::F16 }),
            // Not through i64, where values from 2^63 up would turn negative.
            DType::U64 => self.view::<u64>()?.iter().map(|&v| v as f64).collect(),
            _ => self.to_i64s()?.into_iter().map(|v| v as f64).collect(),
        })
    }

    /// A stable 64-bit FNV-1a hash of dtype, shape and bytes; the IR text form prints it for constants.
    pub fn content_hash(&self) -> u64 {
        let mut h = Fnv::new();
        h.write(&[self.dtype as u8]);
        for &d in &self.shape {
            h.write(&(d as u64).to_le_bytes());
        }
        h.write(&self.data);
        h.0
    }

    /// True when both tensors have the same dtype, shape and bytes.
    pub fn same_content(&self, other: &Tensor) -> bool {
        self.dtype == other.dtype && self.shape == other.shape && self.data == other.data
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({}{:?}, #{:016x})", self.dtype, self.shape, self.content_hash())
    }
}

/// FNV-1a, 64 bit: simple, stable across Rust releases and platforms.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}
