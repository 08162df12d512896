//! Dimensions, shapes and value types. A dimension is a known size or a named symbol (an ONNX
//! `dim_param` such as a dynamic batch `N`) that the user binds before compiling.

use std::collections::HashMap;
use std::fmt;

use crate::dtype::DType;

/// One dimension of a shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(usize),
    Sym(String),
}

impl Dim {
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::Known(n)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

/// A shape whose dimensions may be symbolic.
pub type Shape = Vec<Dim>;

/// Converts a concrete shape into a [`Shape`].
pub fn known_shape(dims: &[usize]) -> Shape {
    dims.iter().map(|&d| Dim::Known(d)).collect()
}

/// The concrete dimensions of a shape, or `None` if any is symbolic.
pub fn static_dims(shape: &[Dim]) -> Option<Vec<usize>> {
    shape.iter().map(Dim::known).collect()
}

/// The dtype and shape of a value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Shape) -> TensorType {
        TensorType { dtype, shape }
    }

    pub fn known(dtype: DType, dims: &[usize]) -> TensorType {
        TensorType { dtype, shape: known_shape(dims) }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The concrete dimensions, or `None` if any is symbolic.
    pub fn static_dims(&self) -> Option<Vec<usize>> {
        static_dims(&self.shape)
    }

    /// Element count when the shape is static.
    pub fn numel(&self) -> Option<usize> {
        self.static_dims().map(|d| d.iter().product())
    }

    /// Replaces symbols that `bindings` names with their sizes.
    pub fn bind(&self, bindings: &HashMap<String, usize>) -> TensorType {
        let shape = self
            .shape
            .iter()
            .map(|d| match d {
                Dim::Sym(s) => bindings.get(s).map_or_else(|| d.clone(), |&n| Dim::Known(n)),
                k => k.clone(),
            })
            .collect();
        TensorType { dtype: self.dtype, shape }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}
