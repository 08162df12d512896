//! Elementwise ops of one tensor: activations and math functions, Clip, Cast, Identity, Dropout.

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::ops::{InferCx, OpDef, expect_float, input, opt_input, raw_tensor, raw_view};
use crate::shape::TensorType;
use crate::tensor::Tensor;
use crate::with_dtype;

/// Applies `f` (computed in f64, rounded once) to every element of a float tensor.
pub fn map_float(t: &Tensor, f: impl Fn(f64) -> f64) -> Result<Tensor, OpError> {
    let shape = t.shape().to_vec();
    Ok(match t.dtype() {
        DType::F32 => Tensor::from_vec(shape, t.view::<f32>()?.iter().map(|&x| f(x as f64) as f32).collect()),
        DType::F64 => Tensor::from_vec(shape, t.view::<f64>()?.iter().map(|&x| f(x)).collect()),
        d => return Err(OpError::Unsupported(format!("elementwise math on {d}"))),
    })
}

/// Activation and math functions of one float input.
#[derive(Clone, Debug, PartialEq)]
pub enum Unary {
    Relu,
    Sigmoid,
    Tanh,
    Sqrt,
    Exp,
    Log,
    Neg,
    Abs,
    Erf,
    HardSwish,
    LeakyRelu {
        alpha: f32,
    },
    Elu {
        alpha: f32,
    },
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// `x * Phi(x)`, Phi the standard normal CDF; with `tanh`, the tanh approximation of it.
    Gelu {
        tanh: bool,
    },
    /// `x * sigmoid(alpha * x)` (SiLU when alpha is 1).
    Swish {
        alpha: f32,
    },
}

impl Unary {
    pub fn build(name: &str, a: &mut Attrs) -> Result<crate::ops::Op, OpError> {
        let u = match name {
            "Relu" => Unary::Relu,
            "Sigmoid" => Unary::Sigmoid,
            "Tanh" => Unary::Tanh,
            "Sqrt" => Unary::Sqrt,
            "Exp" => Unary::Exp,
            "Log" => Unary::Log,
            "Neg" => Unary::Neg,
            "Abs" => Unary::Abs,
            "Erf" => Unary::Erf,
            "HardSwish" => Unary::HardSwish,
            "LeakyRelu" => Unary::LeakyRelu { alpha: a.float("alpha", 0.01)? },
            "Elu" => Unary::Elu { alpha: a.float("alpha", 1.0)? },
            "HardSigmoid" => Unary::HardSigmoid { alpha: a.float("alpha", 0.2)?, beta: a.float("beta", 0.5)? },
            "Swish" => Unary::Swish { alpha: a.float("alpha", 1.0)? },
            "Gelu" => match a.string("approximate", "none")?.as_str() {
                "none" => Unary::Gelu { tanh: false },
                "tanh" => Unary::Gelu { tanh: true },
                other => invalid!("approximate must be 'none' or 'tanh', found '{other}'"),
            },
            other => invalid!("'{other}' is not a unary op"),
        };
        Ok(crate::ops::Op::Unary(u))
    }

    /// The function on one element.
    pub fn apply(&self, x: f64) -> f64 {
        match *self {
            // NaN and -0 stay as they are, as in ONNX Runtime (f64::max would turn NaN into 0).
            Unary::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Unary::Tanh => x.tanh(),
            Unary::Sqrt => x.sqrt(),
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Neg => -x,
            Unary::Abs => x.abs(),
            Unary::Erf => libm::erf(x),
            Unary::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Unary::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha as f64 * x
                } else {
                    x
                }
            }
            Unary::Elu { alpha } => {
                if x < 0.0 {
                    alpha as f64 * (x.exp() - 1.0)
                } else {
                    x
                }
            }
            Unary::HardSigmoid { alpha, beta } => (alpha as f64 * x + beta as f64).clamp(0.0, 1.0),
            Unary::Gelu { tanh: false } => 0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2)),
            Unary::Gelu { tanh: true } => {
                let k = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
            }
            Unary::Swish { alpha } => x * Unary::Sigmoid.apply(alpha as f64 * x),
        }
    }
}

impl OpDef for Unary {
    fn name(&self) -> &'static str {
        match self {
            Unary::Relu => "Relu",
            Unary::Sigmoid => "Sigmoid",
            Unary::Tanh => "Tanh",
            Unary::Sqrt => "Sqrt",
            Unary::Exp => "Exp",
            Unary::Log => "Log",
            Unary::Neg => "Neg",
            Unary::Abs => "Abs",
            Unary::Erf => "Erf",
            Unary::HardSwish => "HardSwish",
            Unary::LeakyRelu { .. } => "LeakyRelu",
            Unary::Elu { .. } => "Elu",
            Unary::HardSigmoid { .. } => "HardSigmoid",
            Unary::Gelu { .. } => "Gelu",
            Unary::Swish { .. } => "Swish",
        }
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 1)?;
        let x = cx.ty(0)?;
        expect_float(x, "input")?;
        Ok(vec![x.clone()])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![map_float(input(inputs, 0)?, |x| self.apply(x))?])
    }

    fn attrs(&self) -> AttrList {
        match *self {
            Unary::LeakyRelu { alpha } | Unary::Elu { alpha } | Unary::Swish { alpha } => {
                vec![("alpha", AttrValue::Float(alpha))]
            }
            Unary::HardSigmoid { alpha, beta } => {
                vec![("alpha", AttrValue::Float(alpha)), ("beta", AttrValue::Float(beta))]
            }
            Unary::Gelu { tanh: true } => vec![("approximate", AttrValue::Str("tanh".into()))],
            _ => vec![],
        }
    }
}

/// Passes its input through.
#[derive(Clone, Debug)]
pub struct Identity;

impl Identity {
    pub fn build(_: &mut Attrs) -> Result<crate::ops::Op, OpError> {
        Ok(crate::ops::Op::Identity(Identity))
    }
}

impl OpDef for Identity {
    fn name(&self) -> &'static str {
        "Identity"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 1)?;
        Ok(vec![cx.ty(0)?.clone()])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![input(inputs, 0)?.clone()])
    }
}

/// Dropout at inference: the output is the input, the optional mask is all true. The importer
/// refuses a Dropout whose `training_mode` is true or not a constant.
#[derive(Clone, Debug)]
pub struct Dropout;

impl Dropout {
    pub fn build(a: &mut Attrs) -> Result<crate::ops::Op, OpError> {
        // ratio and seed only matter in training mode.
        a.ignore("ratio");
        a.ignore("seed");
        a.ignore("is_test");
        Ok(crate::ops::Op::Dropout(Dropout))
    }
}

impl OpDef for Dropout {
    fn name(&self) -> &'static str {
        "Dropout"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 1)?;
        if cx.n_outputs > 2 {
            invalid!("has at most 2 outputs, found {}", cx.n_outputs);
        }
        let x = cx.ty(0)?;
        let mut out = vec![x.clone()];
        if cx.n_outputs == 2 {
            out.push(TensorType::new(DType::Bool, x.shape.clone()));
        }
        Ok(out)
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let mask = Tensor::from_bools(x.shape().to_vec(), vec![true; x.numel()]);
        Ok(vec![x.clone(), mask])
    }
}

/// Clamps to `[min, max]`; both bounds are optional scalar inputs (attributes before opset 11,
/// which the importer turns into constant inputs).
#[derive(Clone, Debug)]
pub struct Clip;

impl Clip {
    pub fn build(_: &mut Attrs) -> Result<crate::ops::Op, OpError> {
        Ok(crate::ops::Op::Clip(Clip))
    }
}

impl OpDef for Clip {
    fn name(&self) -> &'static str {
        "Clip"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 3)?;
        let x = cx.ty(0)?;
        if x.dtype == DType::Bool || x.dtype == DType::F16 {
            return Err(OpError::Unsupported(format!("Clip of {}", x.dtype)));
        }
        for (i, what) in [(1, "min"), (2, "max")] {
            if let Some(b) = cx.opt_ty(i) {
                if b.dtype != x.dtype {
                    invalid!("{what} has type {}, input has {}", b.dtype, x.dtype);
                }
                if b.rank() != 0 && b.numel() != Some(1) {
                    invalid!("{what} must be a scalar, found {b}");
                }
            }
        }
        Ok(vec![x.clone()])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (lo, hi) = (opt_input(inputs, 1), opt_input(inputs, 2));
        with_dtype!(x.dtype(), T => {
            let bound = |b: Option<&Tensor>| -> Result<Option<T>, OpError> {
                match b {
                    None => Ok(None),
                    Some(b) => Ok(raw_view::<T>(b)?.first().copied()),
                }
            };
            let (lo, hi) = (bound(lo)?, bound(hi)?);
            let v: Vec<T> = raw_view::<T>(x)?
                .iter()
                .map(|&v| {
                    // NaN stays NaN: comparisons with it are false.
                    let v = match lo { Some(l) if v < l => l, _ => v };
                    match hi { Some(h) if v > h => h, _ => v }
                })
                .collect();
            Ok(vec![raw_tensor(x.dtype(), x.shape().to_vec(), v)?])
        })
    }
}

/// Converts elements to another dtype (numpy `astype` rules: floats truncate toward zero into
/// integers, saturating at the type's range; integers wrap).
#[derive(Clone, Debug)]
pub struct Cast {
    pub to: DType,
}

impl Cast {
    pub fn build(a: &mut Attrs) -> Result<crate::ops::Op, OpError> {
        let code = a.opt_int("to")?.ok_or_else(|| OpError::Invalid("attribute 'to' is required".into()))?;
        a.ignore("saturate"); // only affects float8 targets, which are refused below
        let to = DType::from_onnx(code as i32)
            .filter(|d| *d != DType::F16)
            .ok_or_else(|| OpError::Unsupported(format!("Cast to {}", DType::onnx_code_name(code as i32))))?;
        Ok(crate::ops::Op::Cast(Cast { to }))
    }
}

fn cast_from_f64(v: &[f64], to: DType, shape: Vec<usize>) -> Result<Tensor, OpError> {
    macro_rules! ints {
        ($t:ty) => {
            Tensor::from_vec(shape, v.iter().map(|&x| x as $t).collect::<Vec<$t>>())
        };
    }
    Ok(match to {
        DType::F32 => ints!(f32),
        DType::F64 => ints!(f64),
        DType::I8 => ints!(i8),
        DType::U8 => ints!(u8),
        DType::I16 => ints!(i16),
        DType::U16 => ints!(u16),
        DType::I32 => ints!(i32),
        DType::U32 => ints!(u32),
        DType::I64 => ints!(i64),
        DType::U64 => ints!(u64),
        DType::Bool => Tensor::from_bools(shape, v.iter().map(|&x| x != 0.0).collect()),
        DType::F16 => return Err(OpError::Unsupported("Cast to f16".into())),
    })
}

fn cast_from_i128(v: &[i128], to: DType, shape: Vec<usize>) -> Result<Tensor, OpError> {
    macro_rules! wrap {
        ($t:ty) => {
            Tensor::from_vec(shape, v.iter().map(|&x| x as $t).collect::<Vec<$t>>())
        };
    }
    Ok(match to {
        DType::F32 => wrap!(f32),
        DType::F64 => wrap!(f64),
        DType::I8 => wrap!(i8),
        DType::U8 => wrap!(u8),
        DType::I16 => wrap!(i16),
        DType::U16 => wrap!(u16),
        DType::I32 => wrap!(i32),
        DType::U32 => wrap!(u32),
        DType::I64 => wrap!(i64),
        DType::U64 => wrap!(u64),
        DType::Bool => Tensor::from_bools(shape, v.iter().map(|&x| x != 0).collect()),
        DType::F16 => return Err(OpError::Unsupported("Cast to f16".into())),
    })
}

impl OpDef for Cast {
    fn name(&self) -> &'static str {
        "Cast"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 1)?;
        let x = cx.ty(0)?;
        if x.dtype == DType::F16 {
            return Err(OpError::Unsupported("Cast from f16".into()));
        }
        Ok(vec![TensorType::new(self.to, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let shape = x.shape().to_vec();
        let out = match x.dtype() {
            DType::F32 | DType::F64 => cast_from_f64(&x.to_f64s()?, self.to, shape)?,
            DType::Bool => {
                cast_from_i128(&x.view_bool()?.iter().map(|&b| b as i128).collect::<Vec<_>>(), self.to, shape)?
            }
            DType::U64 => {
                cast_from_i128(&x.view::<u64>()?.iter().map(|&b| b as i128).collect::<Vec<_>>(), self.to, shape)?
            }
            DType::F16 => return Err(OpError::Unsupported("Cast from f16".into())),
            _ => cast_from_i128(&x.to_i64s()?.iter().map(|&b| b as i128).collect::<Vec<_>>(), self.to, shape)?,
        };
        Ok(vec![out])
    }
    fn attrs(&self) -> AttrList {
        vec![("to", AttrValue::Int(self.to as i64))]
    }
}
