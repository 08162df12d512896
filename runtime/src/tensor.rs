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
    /// Every element type, in declaration order.
    pub const ALL: [DType; 11] = [
        DType::F32,
        DType::F64,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::I8,
        DType::Bool,
        DType::I16,
        DType::U16,
        DType::U32,
        DType::U64,
    ];

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

/// Why a tensor could not be built or read as asked.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum TensorError {
    #[error("shape [{shape}] holds {want} bytes of {dtype}, {got} given")]
    Length { dtype: DType, shape: String, want: String, got: usize },
    #[error("the tensor holds {got}, not {wanted}")]
    DType { wanted: DType, got: DType },
}

fn shape_text(shape: &[usize]) -> String {
    shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",")
}

/// The byte length of `shape` elements of `dtype`, or the error naming both.
fn byte_len(dtype: DType, shape: &[usize], got: usize) -> Result<usize, TensorError> {
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).and_then(|n| n.checked_mul(dtype.size()));
    match n {
        Some(n) if n == got => Ok(n),
        _ => Err(TensorError::Length {
            dtype,
            shape: shape_text(shape),
            want: n.map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string()),
            got,
        }),
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Element types a tensor can be viewed as without conversion. Every bit pattern of these is a
/// valid value, which is why `bool` is not one (read bool tensors through [`Tensor::bytes`]).
pub trait Element: Copy + sealed::Sealed + 'static {
    const DTYPE: DType;
}

macro_rules! element {
    ($($t:ty => $d:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$d;
        }
    )*};
}
element!(f32 => F32, f64 => F64, i32 => I32, i64 => I64, u8 => U8, i8 => I8, i16 => I16, u16 => U16, u32 => U32, u64 => U64);

fn as_bytes<T: Element>(values: &[T]) -> &[u8] {
    // SAFETY: Element types are plain numbers without padding; any initialised value is a valid
    // sequence of bytes, and u8 has no alignment requirement.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

/// A dense row-major tensor owned by the caller or returned by a run: little-endian bytes,
/// 64-byte aligned.
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

    /// A tensor from raw little-endian bytes, whose length must match the shape.
    pub fn from_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<Tensor, TensorError> {
        byte_len(dtype, shape, bytes.len())?;
        Ok(Tensor { dtype, shape: shape.to_vec(), data: AlignedBuf::from_bytes(bytes) })
    }

    /// A tensor of `shape` holding `values` (row-major); the dtype is the element type's.
    pub fn new<T: Element>(shape: &[usize], values: &[T]) -> Result<Tensor, TensorError> {
        Tensor::from_bytes(T::DTYPE, shape, as_bytes(values))
    }

    /// An f32 tensor (`Tensor::new` spelled out for the common case).
    pub fn from_f32(shape: &[usize], values: &[f32]) -> Result<Tensor, TensorError> {
        Tensor::new(shape, values)
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

    /// The elements, borrowed; an error if the tensor holds another dtype.
    pub fn as_slice<T: Element>(&self) -> Result<&[T], TensorError> {
        if self.dtype != T::DTYPE {
            return Err(TensorError::DType { wanted: T::DTYPE, got: self.dtype });
        }
        // SAFETY: the buffer is 64-byte aligned (enough for every Element), holds numel
        // elements of T (the dtype matches), and any bit pattern is a valid T.
        Ok(unsafe { std::slice::from_raw_parts(self.data.as_ptr().cast::<T>(), self.numel()) })
    }

    /// The elements, mutably; an error if the tensor holds another dtype.
    pub fn as_slice_mut<T: Element>(&mut self) -> Result<&mut [T], TensorError> {
        if self.dtype != T::DTYPE {
            return Err(TensorError::DType { wanted: T::DTYPE, got: self.dtype });
        }
        let n = self.numel();
        // SAFETY: as in as_slice, and `self` is borrowed mutably.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.data.as_mut_ptr().cast::<T>(), n) })
    }

    /// The elements of an f32 tensor, as a slice.
    pub fn as_f32(&self) -> Result<&[f32], TensorError> {
        self.as_slice()
    }

    /// The elements of an f32 tensor, copied.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, TensorError> {
        Ok(self.as_f32()?.to_vec())
    }

    /// The `k` largest elements of an f32 tensor, largest first, as (flat index, value); NaNs
    /// rank below every number. For a batch, apply [`top_k`] to each row of `as_f32()`.
    pub fn top_k(&self, k: usize) -> Result<Vec<(usize, f32)>, TensorError> {
        Ok(top_k(self.as_f32()?, k))
    }

    /// A borrowed view, for [`crate::Model::run_into`].
    pub fn view(&self) -> TensorRef<'_> {
        TensorRef { dtype: self.dtype, shape: &self.shape, bytes: self.data.as_slice() }
    }

    /// A mutable borrowed view, for [`crate::Model::run_into`]'s outputs.
    pub fn view_mut(&mut self) -> TensorMut<'_> {
        TensorMut { dtype: self.dtype, shape: &self.shape, bytes: self.data.as_mut_slice() }
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.data.as_ptr()
    }

    /// "f32[1,3,224,224]"
    pub fn type_string(&self) -> String {
        format!("{}[{}]", self.dtype, shape_text(&self.shape))
    }
}

/// The `k` largest values of a slice, largest first, as (index, value); NaNs rank below every
/// number, and equal values keep their index order.
pub fn top_k(values: &[f32], k: usize) -> Vec<(usize, f32)> {
    let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    let mut idx: Vec<usize> = (0..values.len()).collect();
    // Stable sort: ties keep the lower index first, as numpy's argsort(kind="stable") on -x.
    idx.sort_by(|&a, &b| key(values[b]).total_cmp(&key(values[a])).then((values[a].is_nan()).cmp(&values[b].is_nan())));
    idx.into_iter().take(k).map(|i| (i, values[i])).collect()
}

/// A borrowed tensor (caller-owned bytes) to run on: [`crate::Model::run_into`] reads it in
/// place. Any alignment works; 64-byte aligned buffers are what the kernels are tuned for.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    dtype: DType,
    shape: &'a [usize],
    bytes: &'a [u8],
}

impl<'a> TensorRef<'a> {
    /// A view of little-endian bytes, whose length must match the shape.
    pub fn from_bytes(dtype: DType, shape: &'a [usize], bytes: &'a [u8]) -> Result<TensorRef<'a>, TensorError> {
        byte_len(dtype, shape, bytes.len())?;
        Ok(TensorRef { dtype, shape, bytes })
    }

    /// A view of `values` as a tensor of `shape`.
    pub fn new<T: Element>(shape: &'a [usize], values: &'a [T]) -> Result<TensorRef<'a>, TensorError> {
        TensorRef::from_bytes(T::DTYPE, shape, as_bytes(values))
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        self.shape
    }

    pub fn bytes(&self) -> &[u8] {
        self.bytes
    }

    pub fn type_string(&self) -> String {
        format!("{}[{}]", self.dtype, shape_text(self.shape))
    }
}

/// A caller-owned output buffer that [`crate::Model::run_into`] writes in place.
#[derive(Debug)]
pub struct TensorMut<'a> {
    dtype: DType,
    shape: &'a [usize],
    bytes: &'a mut [u8],
}

impl<'a> TensorMut<'a> {
    /// A view of a byte buffer, whose length must match the shape.
    pub fn from_bytes(dtype: DType, shape: &'a [usize], bytes: &'a mut [u8]) -> Result<TensorMut<'a>, TensorError> {
        byte_len(dtype, shape, bytes.len())?;
        Ok(TensorMut { dtype, shape, bytes })
    }

    /// A view of `values` as a tensor of `shape`.
    pub fn new<T: Element>(shape: &'a [usize], values: &'a mut [T]) -> Result<TensorMut<'a>, TensorError> {
        let len = std::mem::size_of_val(values);
        // SAFETY: as in as_bytes; every byte pattern written back is a valid T (Element).
        let bytes = unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), len) };
        TensorMut::from_bytes(T::DTYPE, shape, bytes)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        self.shape
    }

    pub fn bytes(&self) -> &[u8] {
        self.bytes
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.bytes.as_mut_ptr()
    }

    pub fn type_string(&self) -> String {
        format!("{}[{}]", self.dtype, shape_text(self.shape))
    }
}

#[cfg(test)]
mod tests {
    use super::DType;

    /// `ALL` holds every variant once, in declaration order: a new variant does not compile here
    /// until it is given a place, and the assertion then wants it in `ALL`.
    #[test]
    fn all_lists_every_dtype_once() {
        let position = |d: DType| match d {
            DType::F32 => 0,
            DType::F64 => 1,
            DType::I32 => 2,
            DType::I64 => 3,
            DType::U8 => 4,
            DType::I8 => 5,
            DType::Bool => 6,
            DType::I16 => 7,
            DType::U16 => 8,
            DType::U32 => 9,
            DType::U64 => 10,
        };
        for (i, d) in DType::ALL.into_iter().enumerate() {
            assert_eq!(position(d), i, "{d:?}");
        }
    }
}
