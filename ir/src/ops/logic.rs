//! Comparisons, boolean logic, Where and Mod: elementwise with numpy broadcasting. In vision
//! models they mostly compute shapes and masks from constants (Swin's shifted-window mask), so
//! constant folding removes them; the JIT runs the rest with scalar kernels.

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::ops::binary::{broadcast_dims, broadcast_offsets, broadcast_shapes, zip_broadcast};
use crate::ops::{InferCx, Op, OpDef, input};
use crate::shape::TensorType;
use crate::tensor::Tensor;

/// A comparison of two tensors of one type, giving bools. NaN compares false (unequal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl Compare {
    pub fn build(name: &str, _: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::Compare(match name {
            "Equal" => Compare::Equal,
            "Less" => Compare::Less,
            "LessOrEqual" => Compare::LessOrEqual,
            "Greater" => Compare::Greater,
            "GreaterOrEqual" => Compare::GreaterOrEqual,
            other => invalid!("'{other}' is not a comparison"),
        }))
    }

    pub fn holds<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            Compare::Equal => a == b,
            Compare::Less => a < b,
            Compare::LessOrEqual => a <= b,
            Compare::Greater => a > b,
            Compare::GreaterOrEqual => a >= b,
        }
    }
}

impl OpDef for Compare {
    fn name(&self) -> &'static str {
        match self {
            Compare::Equal => "Equal",
            Compare::Less => "Less",
            Compare::LessOrEqual => "LessOrEqual",
            Compare::Greater => "Greater",
            Compare::GreaterOrEqual => "GreaterOrEqual",
        }
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 2)?;
        let (a, b) = (cx.ty(0)?, cx.ty(1)?);
        if a.dtype != b.dtype {
            invalid!("input types differ ({} vs {})", a.dtype, b.dtype);
        }
        match a.dtype {
            DType::F16 => return Err(OpError::Unsupported(format!("{} of {}", self.name(), a.dtype))),
            DType::Bool if *self != Compare::Equal => {
                invalid!("{} is not defined on bool", self.name())
            }
            _ => {}
        }
        Ok(vec![TensorType::new(DType::Bool, broadcast_shapes(&a.shape, &b.shape)?)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let c = *self;
        let out = if a.dtype() == DType::Bool {
            let (a, b) = (bytes_of_bool(a)?, bytes_of_bool(b)?);
            zip_broadcast::<u8, u8>(&a, &b, |x, y| u8::from(c.holds(x != 0, y != 0)))?
        } else {
            crate::with_numeric!(a.dtype(), T => zip_broadcast::<T, u8>(a, b, |x, y| u8::from(c.holds(x, y))))?
        };
        Ok(vec![as_bool(out)])
    }
}

/// A bool tensor's bytes as u8s (0 or 1), for the numeric helpers.
fn bytes_of_bool(t: &Tensor) -> Result<Tensor, OpError> {
    Ok(Tensor::from_bytes(DType::U8, t.shape().to_vec(), t.bytes().clone())?)
}

/// A u8 tensor of 0s and 1s as the bool tensor it stands for.
fn as_bool(t: Tensor) -> Tensor {
    let v = t.view::<u8>().map(|v| v.iter().map(|&x| x != 0).collect()).unwrap_or_default();
    Tensor::from_bools(t.shape().to_vec(), v)
}

/// Boolean logic: Not of one tensor, And/Or/Xor of two (broadcast).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logical {
    Not,
    And,
    Or,
    Xor,
}

impl Logical {
    pub fn build(name: &str, _: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::Logical(match name {
            "Not" => Logical::Not,
            "And" => Logical::And,
            "Or" => Logical::Or,
            "Xor" => Logical::Xor,
            other => invalid!("'{other}' is not a logical op"),
        }))
    }

    pub fn apply(self, a: bool, b: bool) -> bool {
        match self {
            Logical::Not => !a,
            Logical::And => a && b,
            Logical::Or => a || b,
            Logical::Xor => a != b,
        }
    }
}

impl OpDef for Logical {
    fn name(&self) -> &'static str {
        match self {
            Logical::Not => "Not",
            Logical::And => "And",
            Logical::Or => "Or",
            Logical::Xor => "Xor",
        }
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        let n = if *self == Logical::Not { 1 } else { 2 };
        cx.arity(n, n)?;
        let mut shape = cx.ty(0)?.shape.clone();
        for i in 0..n {
            let t = cx.ty(i)?;
            if t.dtype != DType::Bool {
                invalid!("input {i} must be bool, found {t}");
            }
            shape = broadcast_shapes(&shape, &t.shape)?;
        }
        Ok(vec![TensorType::new(DType::Bool, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let a = input(inputs, 0)?;
        let l = *self;
        let out = if l == Logical::Not {
            Tensor::from_bools(a.shape().to_vec(), a.view_bool()?.iter().map(|&x| x == 0).collect())
        } else {
            let (a, b) = (bytes_of_bool(a)?, bytes_of_bool(input(inputs, 1)?)?);
            as_bool(zip_broadcast::<u8, u8>(&a, &b, |x, y| u8::from(l.apply(x != 0, y != 0)))?)
        };
        Ok(vec![out])
    }
}

/// `cond ? x : y` elementwise, the three broadcast together; x and y of any one type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Where;

impl OpDef for Where {
    fn name(&self) -> &'static str {
        "Where"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(3, 3)?;
        let (c, x, y) = (cx.ty(0)?, cx.ty(1)?, cx.ty(2)?);
        if c.dtype != DType::Bool {
            invalid!("the condition must be bool, found {c}");
        }
        if x.dtype != y.dtype {
            invalid!("the branches' types differ ({} vs {})", x.dtype, y.dtype);
        }
        let shape = broadcast_shapes(&broadcast_shapes(&c.shape, &x.shape)?, &y.shape)?;
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (c, x, y) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let shape = broadcast_dims(&broadcast_dims(c.shape(), x.shape())?, y.shape())?;
        let (oc, ox, oy) = (
            broadcast_offsets(c.shape(), &shape),
            broadcast_offsets(x.shape(), &shape),
            broadcast_offsets(y.shape(), &shape),
        );
        let cond = c.view_bool()?;
        // Element bytes are copied as they are: Where never looks at the values it picks.
        let size = x.dtype().size();
        let (xb, yb) = (x.bytes(), y.bytes());
        let mut out = Vec::with_capacity(oc.len() * size);
        for i in 0..oc.len() {
            let (src, o) = if cond[oc[i]] != 0 { (xb, ox[i]) } else { (yb, oy[i]) };
            out.extend_from_slice(&src[o * size..(o + 1) * size]);
        }
        Ok(vec![Tensor::from_bytes(x.dtype(), shape, bytes::Bytes::from(out))?])
    }
}

/// Remainder. `fmod = 0` (integers only): the sign of the divisor, as Python's `%`;
/// `fmod = 1`: the sign of the dividend, as C's `fmod`. Integer division by zero gives 0 (as Div).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mod {
    pub fmod: bool,
}

impl Mod {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let fmod = match a.int("fmod", 0)? {
            0 => false,
            1 => true,
            v => invalid!("fmod must be 0 or 1, found {v}"),
        };
        Ok(Op::Mod(Mod { fmod }))
    }

    /// The remainder of integers (as i128, so that no operand overflows).
    pub fn int(self, a: i128, b: i128) -> i128 {
        if b == 0 {
            return 0;
        }
        let r = a % b;
        if !self.fmod && r != 0 && (r < 0) != (b < 0) { r + b } else { r }
    }
}

impl OpDef for Mod {
    fn name(&self) -> &'static str {
        "Mod"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 2)?;
        let (a, b) = (cx.ty(0)?, cx.ty(1)?);
        if a.dtype != b.dtype {
            invalid!("input types differ ({} vs {})", a.dtype, b.dtype);
        }
        match a.dtype {
            DType::F32 | DType::F64 if !self.fmod => invalid!("fmod must be 1 for {} inputs", a.dtype),
            DType::Bool | DType::F16 => return Err(OpError::Unsupported(format!("Mod of {}", a.dtype))),
            _ => {}
        }
        Ok(vec![TensorType::new(a.dtype, broadcast_shapes(&a.shape, &b.shape)?)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let m = *self;
        macro_rules! by_type {
            ($($d:ident => $t:ty),*) => {
                match a.dtype() {
                    DType::F32 => zip_broadcast::<f32, f32>(a, b, |x, y| x % y)?,
                    DType::F64 => zip_broadcast::<f64, f64>(a, b, |x, y| x % y)?,
                    // The remainder's magnitude is below the divisor's, so it fits the type.
                    $(DType::$d => zip_broadcast::<$t, $t>(a, b, |x, y| m.int(x as i128, y as i128) as $t)?,)*
                    d => return Err(OpError::Unsupported(format!("Mod of {d}"))),
                }
            };
        }
        let out = by_type!(I8 => i8, U8 => u8, I16 => i16, U16 => u16, I32 => i32, U32 => u32, I64 => i64, U64 => u64);
        Ok(vec![out])
    }

    fn attrs(&self) -> AttrList {
        vec![("fmod", AttrValue::Int(self.fmod as i64))]
    }
}
