//! Element types of tensors, with their ONNX codes.

use std::fmt;

/// The element type of a tensor. The discriminants are ONNX `TensorProto.DataType` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32 = 1,
    U8 = 2,
    I8 = 3,
    U16 = 4,
    I16 = 5,
    I32 = 6,
    I64 = 7,
    Bool = 9,
    F16 = 10,
    F64 = 11,
    U32 = 12,
    U64 = 13,
}

impl DType {
    pub const ALL: [DType; 12] = [
        DType::F32,
        DType::U8,
        DType::I8,
        DType::U16,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::Bool,
        DType::F16,
        DType::F64,
        DType::U32,
        DType::U64,
    ];

    /// Maps an ONNX `TensorProto.DataType` code; `None` for types incept cannot hold
    /// (strings, complex, bfloat16, float8 and sub-byte types).
    pub fn from_onnx(code: i32) -> Option<DType> {
        DType::ALL.into_iter().find(|d| *d as i32 == code)
    }

    /// A human name for an ONNX type code, including ones incept does not hold.
    pub fn onnx_code_name(code: i32) -> String {
        match DType::from_onnx(code) {
            Some(d) => d.name().to_string(),
            None => match code {
                0 => "undefined".into(),
                8 => "string".into(),
                14 => "complex64".into(),
                15 => "complex128".into(),
                16 => "bfloat16".into(),
                17..=20 => "float8".into(),
                21 | 22 | 25 | 26 => "sub-byte int".into(),
                23 | 24 => "float4/float8e8m0".into(),
                c => format!("type code {c}"),
            },
        }
    }

    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 | DType::Bool => 1,
            DType::U16 | DType::I16 | DType::F16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
        }
    }

    /// The short name used in the IR text form (`f32`, `i64`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::U16 => "u16",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Bool => "bool",
            DType::F16 => "f16",
            DType::F64 => "f64",
            DType::U32 => "u32",
            DType::U64 => "u64",
        }
    }

    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16)
    }

    pub fn is_int(self) -> bool {
        matches!(
            self,
            DType::U8 | DType::I8 | DType::U16 | DType::I16 | DType::I32 | DType::I64 | DType::U32 | DType::U64
        )
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The runtime's element types are the IR's minus f16 (the runtime neither takes nor returns it).
impl From<incept_runtime::DType> for DType {
    fn from(d: incept_runtime::DType) -> DType {
        use incept_runtime::DType as R;
        match d {
            R::F32 => DType::F32,
            R::F64 => DType::F64,
            R::I32 => DType::I32,
            R::I64 => DType::I64,
            R::U8 => DType::U8,
            R::I8 => DType::I8,
            R::Bool => DType::Bool,
            R::I16 => DType::I16,
            R::U16 => DType::U16,
            R::U32 => DType::U32,
            R::U64 => DType::U64,
        }
    }
}

impl TryFrom<DType> for incept_runtime::DType {
    /// The dtype the runtime lacks (f16).
    type Error = DType;
    fn try_from(d: DType) -> Result<incept_runtime::DType, DType> {
        use incept_runtime::DType as R;
        Ok(match d {
            DType::F32 => R::F32,
            DType::F64 => R::F64,
            DType::I32 => R::I32,
            DType::I64 => R::I64,
            DType::U8 => R::U8,
            DType::I8 => R::I8,
            DType::Bool => R::Bool,
            DType::I16 => R::I16,
            DType::U16 => R::U16,
            DType::U32 => R::U32,
            DType::U64 => R::U64,
            DType::F16 => return Err(d),
        })
    }
}
