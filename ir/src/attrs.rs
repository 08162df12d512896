//! Op attributes in one generic form, shared by the ONNX importer and the IR text parser.
//! Each op reads its typed attributes out of an [`Attrs`] and writes them back for printing.

use std::fmt;

use crate::error::OpError;
use crate::format::{fmt_f32, format_const, quote};
use crate::tensor::Tensor;

/// One attribute value.
#[derive(Clone, Debug)]
pub enum AttrValue {
    Int(i64),
    Float(f32),
    Str(String),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Strs(Vec<String>),
    Tensor(Tensor),
}

impl AttrValue {
    fn kind(&self) -> &'static str {
        match self {
            AttrValue::Int(_) => "int",
            AttrValue::Float(_) => "float",
            AttrValue::Str(_) => "string",
            AttrValue::Ints(_) => "ints",
            AttrValue::Floats(_) => "floats",
            AttrValue::Strs(_) => "strings",
            AttrValue::Tensor(_) => "tensor",
        }
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T>(f: &mut fmt::Formatter<'_>, items: &[T], show: impl Fn(&T) -> String) -> fmt::Result {
            f.write_str("[")?;
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                f.write_str(&show(v))?;
            }
            f.write_str("]")
        }
        match self {
            AttrValue::Int(v) => write!(f, "{v}"),
            AttrValue::Float(v) => f.write_str(&fmt_f32(*v)),
            AttrValue::Str(s) => f.write_str(&quote(s)),
            AttrValue::Ints(v) => list(f, v, |x| x.to_string()),
            AttrValue::Floats(v) => list(f, v, |x| fmt_f32(*x)),
            AttrValue::Strs(v) => list(f, v, |x| quote(x)),
            AttrValue::Tensor(t) => f.write_str(&format_const(t, usize::MAX)),
        }
    }
}

/// Attributes of one node, consumed by the op that reads them. Whatever is left when the op is done
/// is an attribute the op does not know, which [`Attrs::finish`] reports.
#[derive(Clone, Debug, Default)]
pub struct Attrs {
    items: Vec<(String, AttrValue)>,
}

impl Attrs {
    pub fn new(items: Vec<(String, AttrValue)>) -> Attrs {
        Attrs { items }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn insert(&mut self, name: &str, v: AttrValue) {
        self.items.retain(|(n, _)| n != name);
        self.items.push((name.to_string(), v));
    }

    pub fn contains(&self, name: &str) -> bool {
        self.items.iter().any(|(n, _)| n == name)
    }

    /// Removes and returns an attribute.
    pub fn take(&mut self, name: &str) -> Option<AttrValue> {
        let i = self.items.iter().position(|(n, _)| n == name)?;
        Some(self.items.remove(i).1)
    }

    fn wrong(name: &str, want: &str, got: &AttrValue) -> OpError {
        OpError::Invalid(format!("attribute '{name}' must be {want}, found {}", got.kind()))
    }

    pub fn opt_int(&mut self, name: &str) -> Result<Option<i64>, OpError> {
        match self.take(name) {
            None => Ok(None),
            Some(AttrValue::Int(v)) => Ok(Some(v)),
            Some(v) => Err(Self::wrong(name, "an int", &v)),
        }
    }

    pub fn int(&mut self, name: &str, default: i64) -> Result<i64, OpError> {
        Ok(self.opt_int(name)?.unwrap_or(default))
    }

    pub fn opt_float(&mut self, name: &str) -> Result<Option<f32>, OpError> {
        match self.take(name) {
            None => Ok(None),
            Some(AttrValue::Float(v)) => Ok(Some(v)),
            Some(AttrValue::Int(v)) => Ok(Some(v as f32)),
            Some(v) => Err(Self::wrong(name, "a float", &v)),
        }
    }

    pub fn float(&mut self, name: &str, default: f32) -> Result<f32, OpError> {
        Ok(self.opt_float(name)?.unwrap_or(default))
    }

    pub fn opt_ints(&mut self, name: &str) -> Result<Option<Vec<i64>>, OpError> {
        match self.take(name) {
            None => Ok(None),
            Some(AttrValue::Ints(v)) => Ok(Some(v)),
            Some(AttrValue::Floats(v)) if v.is_empty() => Ok(Some(vec![])),
            Some(v) => Err(Self::wrong(name, "a list of ints", &v)),
        }
    }

    pub fn opt_floats(&mut self, name: &str) -> Result<Option<Vec<f32>>, OpError> {
        match self.take(name) {
            None => Ok(None),
            Some(AttrValue::Floats(v)) => Ok(Some(v)),
            Some(AttrValue::Ints(v)) => Ok(Some(v.into_iter().map(|x| x as f32).collect())),
            Some(v) => Err(Self::wrong(name, "a list of floats", &v)),
        }
    }

    pub fn opt_string(&mut self, name: &str) -> Result<Option<String>, OpError> {
        match self.take(name) {
            None => Ok(None),
            Some(AttrValue::Str(v)) => Ok(Some(v)),
            Some(v) => Err(Self::wrong(name, "a string", &v)),
        }
    }

    pub fn string(&mut self, name: &str, default: &str) -> Result<String, OpError> {
        Ok(self.opt_string(name)?.unwrap_or_else(|| default.to_string()))
    }

    pub fn opt_tensor(&mut self, name: &str) -> Result<Option<Tensor>, OpError> {
        match self.take(name) {
            None => Ok(None),
            Some(AttrValue::Tensor(t)) => Ok(Some(t)),
            Some(v) => Err(Self::wrong(name, "a tensor", &v)),
        }
    }

    /// Drops an attribute that has no effect on inference (e.g. BatchNormalization's momentum).
    pub fn ignore(&mut self, name: &str) {
        self.take(name);
    }

    /// Fails if any attribute was not consumed.
    pub fn finish(self) -> Result<(), OpError> {
        if self.items.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.items.iter().map(|(n, _)| n.as_str()).collect();
        Err(OpError::Invalid(format!("unknown attribute(s): {}", names.join(", "))))
    }
}

/// Attributes as an op writes them for printing, in a fixed order.
pub type AttrList = Vec<(&'static str, AttrValue)>;
