//! Elementwise ops of several tensors with numpy broadcasting: Add, Sub, Mul, Div, Pow, PRelu and
//! the variadic Sum, Max, Min.

use crate::attrs::Attrs;
use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::ops::{InferCx, Op, OpDef, input, strides_of};
use crate::shape::{Dim, Shape, TensorType};
use crate::tensor::{Element, Tensor};

/// Broadcasts two shapes the numpy way (symbolic dims must match exactly or meet a 1).
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Result<Shape, OpError> {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n { &a[i + a.len() - n] } else { &Dim::Known(1) };
        let db = if i + b.len() >= n { &b[i + b.len() - n] } else { &Dim::Known(1) };
        out.push(match (da, db) {
            _ if da == db => da.clone(),
            (Dim::Known(1), d) | (d, Dim::Known(1)) => d.clone(),
            (Dim::Known(x), Dim::Known(y)) => {
                invalid!("shapes {} and {} do not broadcast (dimension {x} vs {y})", show(a), show(b))
            }
            _ => {
                return Err(OpError::DynamicShape(format!(
                    "cannot tell whether {} and {} broadcast; bind the symbolic dimensions",
                    show(a),
                    show(b)
                )));
            }
        });
    }
    Ok(out)
}

fn show(s: &[Dim]) -> String {
    format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","))
}

/// For every element of `out` (row-major), its offset in a tensor of shape `inp` broadcast to it.
pub fn broadcast_offsets(inp: &[usize], out: &[usize]) -> Vec<usize> {
    let rank = out.len();
    let pad = rank - inp.len();
    let in_strides = strides_of(inp);
    // Stride 0 along broadcast dims.
    let strides: Vec<usize> =
        (0..rank).map(|k| if k < pad || inp[k - pad] == 1 { 0 } else { in_strides[k - pad] }).collect();
    let numel: usize = out.iter().product();
    let mut offs = Vec::with_capacity(numel);
    if numel == 0 {
        return offs;
    }
    let mut idx = vec![0usize; rank];
    let mut off = 0usize;
    for _ in 0..numel {
        offs.push(off);
        let mut k = rank;
        while k > 0 {
            k -= 1;
            idx[k] += 1;
            off += strides[k];
            if idx[k] < out[k] {
                break;
            }
            off -= strides[k] * idx[k];
            idx[k] = 0;
        }
    }
    offs
}

/// Concrete numpy broadcast of two shapes.
pub fn broadcast_dims(a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    let s = broadcast_shapes(&crate::shape::known_shape(a), &crate::shape::known_shape(b))?;
    Ok(crate::shape::static_dims(&s).unwrap_or_default())
}

/// Arithmetic the reference semantics needs on every numeric element type.
pub trait Arith: Element {
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    fn max_of(self, o: Self) -> Self;
    fn min_of(self, o: Self) -> Self;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn is_nan(self) -> bool;
}

macro_rules! arith_float {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            fn add(self, o: Self) -> Self { self + o }
            fn sub(self, o: Self) -> Self { self - o }
            fn mul(self, o: Self) -> Self { self * o }
            fn div(self, o: Self) -> Self { self / o }
            // IEEE 754-2019 maximum/minimum: a NaN in either position wins (what ONNX Runtime's Max
            // and Min return, measured), and -0 < +0 (ORT's own choice between equal zeros
            // depends on its scalar or vector path, so there is none to follow).
            fn max_of(self, o: Self) -> Self {
                if self.is_nan() || o.is_nan() { <$t>::NAN }
                else if self == o { if self.is_sign_negative() { o } else { self } }
                else if o > self { o } else { self }
            }
            fn min_of(self, o: Self) -> Self {
                if self.is_nan() || o.is_nan() { <$t>::NAN }
                else if self == o { if self.is_sign_negative() { self } else { o } }
                else if o < self { o } else { self }
            }
            fn to_f64(self) -> f64 { self as f64 }
            fn from_f64(v: f64) -> Self { v as $t }
            fn is_nan(self) -> bool { <$t>::is_nan(self) }
        }
    )*};
}
macro_rules! arith_int {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            fn sub(self, o: Self) -> Self { self.wrapping_sub(o) }
            fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            // Integer division by zero has no defined result; 0 keeps the interpreter panic-free.
            fn div(self, o: Self) -> Self { if o == 0 { 0 } else { self.wrapping_div(o) } }
            fn max_of(self, o: Self) -> Self { Ord::max(self, o) }
            fn min_of(self, o: Self) -> Self { Ord::min(self, o) }
            fn to_f64(self) -> f64 { self as f64 }
            fn from_f64(v: f64) -> Self { v as $t }
            fn is_nan(self) -> bool { false }
        }
    )*};
}
arith_float!(f32, f64);
arith_int!(i8, u8, i16, u16, i32, u32, i64, u64);

/// Runs `$body` with `$T` bound to the element type of a numeric dtype (bool and f16 are not).
#[macro_export]
macro_rules! with_numeric {
    ($dt:expr, $T:ident => $body:expr) => {{
        match $dt {
            d @ ($crate::dtype::DType::Bool | $crate::dtype::DType::F16) => {
                Err($crate::error::OpError::Unsupported(format!("arithmetic on {d}")))
            }
            d => $crate::with_dtype!(d, $T => $body),
        }
    }};
}

/// Applies `f` elementwise over two broadcast tensors of element type `T`.
pub fn zip_broadcast<T: Element, U: Element>(a: &Tensor, b: &Tensor, f: impl Fn(T, T) -> U) -> Result<Tensor, OpError> {
    let out_shape = broadcast_dims(a.shape(), b.shape())?;
    let (va, vb) = (a.view::<T>()?, b.view::<T>()?);
    let out: Vec<U> = if a.shape() == out_shape.as_slice() && b.shape() == out_shape.as_slice() {
        va.iter().zip(vb.iter()).map(|(&x, &y)| f(x, y)).collect()
    } else if b.numel() == 1 {
        let y = vb[0];
        let oa = broadcast_offsets(a.shape(), &out_shape);
        oa.iter().map(|&i| f(va[i], y)).collect()
    } else {
        let (oa, ob) = (broadcast_offsets(a.shape(), &out_shape), broadcast_offsets(b.shape(), &out_shape));
        oa.iter().zip(&ob).map(|(&i, &j)| f(va[i], vb[j])).collect()
    };
    Ok(Tensor::from_vec(out_shape, out))
}

/// Two-input elementwise ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    /// Exponent may have another numeric type than the base.
    Pow,
    /// `x < 0 ? slope * x : x`, slope broadcast to x's shape.
    PRelu,
}

impl Binary {
    pub fn build(name: &str, _: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::Binary(match name {
            "Add" => Binary::Add,
            "Sub" => Binary::Sub,
            "Mul" => Binary::Mul,
            "Div" => Binary::Div,
            "Pow" => Binary::Pow,
            "PRelu" => Binary::PRelu,
            other => invalid!("'{other}' is not a binary op"),
        }))
    }
}

impl OpDef for Binary {
    fn name(&self) -> &'static str {
        match self {
            Binary::Add => "Add",
            Binary::Sub => "Sub",
            Binary::Mul => "Mul",
            Binary::Div => "Div",
            Binary::Pow => "Pow",
            Binary::PRelu => "PRelu",
        }
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 2)?;
        let (a, b) = (cx.ty(0)?, cx.ty(1)?);
        if *self != Binary::Pow && a.dtype != b.dtype {
            invalid!("input types differ ({} vs {})", a.dtype, b.dtype);
        }
        if matches!(a.dtype, DType::Bool | DType::F16) || matches!(b.dtype, DType::Bool | DType::F16) {
            return Err(OpError::Unsupported(format!("{} of {} and {}", self.name(), a.dtype, b.dtype)));
        }
        let shape = broadcast_shapes(&a.shape, &b.shape)?;
        if *self == Binary::PRelu && shape != a.shape {
            invalid!("slope {} does not broadcast to the input {}", b, a);
        }
        Ok(vec![TensorType::new(a.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let out = if *self == Binary::Pow {
            let e = b.to_f64s()?;
            let e = Tensor::from_vec(b.shape().to_vec(), e);
            crate::with_numeric!(a.dtype(), T => {
                let a64 = Tensor::from_vec(a.shape().to_vec(), a.view::<T>()?.iter().map(|v| v.to_f64()).collect());
                zip_broadcast::<f64, T>(&a64, &e, |x, y| T::from_f64(x.powf(y)))
            })?
        } else {
            crate::with_numeric!(a.dtype(), T => match self {
                Binary::Add => zip_broadcast::<T, T>(a, b, T::add),
                Binary::Sub => zip_broadcast::<T, T>(a, b, T::sub),
                Binary::Mul => zip_broadcast::<T, T>(a, b, T::mul),
                Binary::Div => zip_broadcast::<T, T>(a, b, T::div),
                Binary::PRelu => zip_broadcast::<T, T>(a, b, |x, s| if x < T::default() { x.mul(s) } else { x }),
                Binary::Pow => unreachable!("handled above"),
            })?
        };
        Ok(vec![out])
    }
}

/// Ops over any number of broadcast inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variadic {
    Sum,
    Max,
    Min,
}

impl Variadic {
    pub fn build(name: &str, _: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::Variadic(match name {
            "Sum" => Variadic::Sum,
            "Max" => Variadic::Max,
            "Min" => Variadic::Min,
            other => invalid!("'{other}' is not a variadic op"),
        }))
    }
}

impl OpDef for Variadic {
    fn name(&self) -> &'static str {
        match self {
            Variadic::Sum => "Sum",
            Variadic::Max => "Max",
            Variadic::Min => "Min",
        }
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, usize::MAX)?;
        let first = cx.ty(0)?;
        if matches!(first.dtype, DType::Bool | DType::F16) {
            return Err(OpError::Unsupported(format!("{} of {}", self.name(), first.dtype)));
        }
        let mut shape = first.shape.clone();
        for i in 1..cx.len() {
            let t = cx.ty(i)?;
            if t.dtype != first.dtype {
                invalid!("input {i} has type {}, input 0 has {}", t.dtype, first.dtype);
            }
            shape = broadcast_shapes(&shape, &t.shape)?;
        }
        Ok(vec![TensorType::new(first.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let mut acc = input(inputs, 0)?.clone();
        for i in 1..inputs.len() {
            let b = input(inputs, i)?;
            acc = crate::with_numeric!(acc.dtype(), T => match self {
                Variadic::Sum => zip_broadcast::<T, T>(&acc, b, T::add),
                Variadic::Max => zip_broadcast::<T, T>(&acc, b, T::max_of),
                Variadic::Min => zip_broadcast::<T, T>(&acc, b, T::min_of),
            })?;
        }
        Ok(vec![acc])
    }
}
