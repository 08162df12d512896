//! Fused ops made by the lowering passes: a Conv/ConvTranspose/Gemm/MatMul carrying an epilogue
//! (residual or bias adds and activations applied to its output), and an elementwise expression
//! over several inputs. Their semantics are those of the ops they replace, applied in order.
//!
//! Text form: `%y = Conv(%x, %w, %b) {...} epilogue(add %res, relu) : f32[..]` and
//! `%y = Elementwise(%a, %s, %t) expr(relu(add(mul(%a, %s), %t))) : f32[..]`.

use crate::attrs::AttrList;
use crate::error::OpError;
use crate::format::fmt_f32;
use crate::invalid;
use crate::ops::binary::broadcast_shapes;
use crate::ops::elementwise::map_float;
use crate::ops::{Binary, InferCx, InferInput, Op, OpDef, Unary, expect_float, input};
use crate::shape::TensorType;
use crate::tensor::Tensor;

/// A function of one value that can run in an epilogue or an expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Activation {
    Unary(Unary),
    /// Clip with constant bounds.
    Clip {
        min: Option<f32>,
        max: Option<f32>,
    },
}

impl Activation {
    pub fn apply(&self, t: &Tensor) -> Result<Tensor, OpError> {
        match self {
            Activation::Unary(u) => map_float(t, |x| u.apply(x)),
            Activation::Clip { min, max } => {
                let (lo, hi) = (min.map(|v| v as f64), max.map(|v| v as f64));
                map_float(t, |x| {
                    let x = match lo {
                        Some(l) if x < l => l,
                        _ => x,
                    };
                    match hi {
                        Some(h) if x > h => h,
                        _ => x,
                    }
                })
            }
        }
    }

    /// Text form: `relu`, `leaky_relu(0.1)`, `clip(0.0, 6.0)`, ...
    pub fn text(&self) -> String {
        let bound = |v: &Option<f32>| v.map_or("_".to_string(), fmt_f32);
        match self {
            Activation::Clip { min, max } => format!("clip({}, {})", bound(min), bound(max)),
            Activation::Unary(u) => match u {
                Unary::LeakyRelu { alpha } => format!("leaky_relu({})", fmt_f32(*alpha)),
                Unary::Elu { alpha } => format!("elu({})", fmt_f32(*alpha)),
                Unary::HardSigmoid { alpha, beta } => format!("hard_sigmoid({}, {})", fmt_f32(*alpha), fmt_f32(*beta)),
                Unary::Gelu { tanh: true } => "gelu_tanh".into(),
                // SiLU, the common case, prints bare.
                Unary::Swish { alpha } if *alpha != 1.0 => format!("swish({})", fmt_f32(*alpha)),
                u => snake(u.name()),
            },
        }
    }

    /// Parses a name and its numeric parameters (as written by [`Activation::text`]).
    pub fn from_text(name: &str, params: &[Option<f32>]) -> Result<Activation, OpError> {
        let p = |i: usize| {
            params.get(i).copied().flatten().ok_or_else(|| OpError::Invalid(format!("{name} needs parameter {i}")))
        };
        let u = match name {
            "clip" => {
                return Ok(Activation::Clip {
                    min: params.first().copied().flatten(),
                    max: params.get(1).copied().flatten(),
                });
            }
            "leaky_relu" => Unary::LeakyRelu { alpha: p(0)? },
            "elu" => Unary::Elu { alpha: p(0)? },
            "hard_sigmoid" => Unary::HardSigmoid { alpha: p(0)?, beta: p(1)? },
            "gelu_tanh" => Unary::Gelu { tanh: true },
            "swish" => Unary::Swish { alpha: params.first().copied().flatten().unwrap_or(1.0) },
            other => UNARIES
                .iter()
                .find(|u| snake(u.name()) == other)
                .cloned()
                .ok_or_else(|| OpError::Invalid(format!("unknown function '{other}'")))?,
        };
        Ok(Activation::Unary(u))
    }
}

/// The parameterless unary ops, for parsing.
const UNARIES: [Unary; 11] = [
    Unary::Relu,
    Unary::Sigmoid,
    Unary::Tanh,
    Unary::Sqrt,
    Unary::Exp,
    Unary::Log,
    Unary::Neg,
    Unary::Abs,
    Unary::Erf,
    Unary::HardSwish,
    Unary::Gelu { tanh: false },
];

/// `HardSwish` -> `hard_swish`.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// One step of an epilogue.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Adds node input `operand` (a residual, or a bias broadcast to the output).
    Add {
        operand: usize,
    },
    Act(Activation),
}

/// A linear op (Conv, ConvTranspose, Gemm, MatMul) followed by an epilogue. The node's inputs are
/// the op's own `base_inputs`, then the epilogue's operands.
#[derive(Clone, Debug)]
pub struct Fused {
    pub base: Box<Op>,
    pub base_inputs: usize,
    pub steps: Vec<Step>,
}

impl Fused {
    /// The inputs of the base op alone. An absent trailing optional input (a conv's bias) may be
    /// missing from the node's list, so the epilogue operands that follow start at
    /// `base_inputs`, not at the op's full arity: reading past this slice for an optional input
    /// would take an epilogue operand for it.
    /// Most epilogue steps one fused op carries; fusion leaves the rest as separate ops (a
    /// chain of activations after a conv stays linear to fuse).
    pub const MAX_STEPS: usize = 16;

    pub fn base_operands<'a, T>(&self, inputs: &'a [T]) -> &'a [T] {
        &inputs[..self.base_inputs.min(inputs.len())]
    }

    /// Which ops can carry an epilogue.
    pub fn can_carry(op: &Op) -> bool {
        matches!(op, Op::Conv(_) | Op::ConvTranspose(_) | Op::Gemm(_) | Op::MatMul(_))
    }
}

impl OpDef for Fused {
    fn name(&self) -> &'static str {
        self.base.name()
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        if !Fused::can_carry(&self.base) {
            invalid!("{} cannot carry an epilogue", self.base.name());
        }
        let all: Vec<Option<InferInput>> =
            (0..cx.len()).map(|i| cx.opt_ty(i).map(|ty| InferInput { ty, value: cx.value(i) })).collect();
        if self.base_inputs > all.len() {
            invalid!("has {} inputs, the op alone takes {}", all.len(), self.base_inputs);
        }
        let base_cx = InferCx::new(&all[..self.base_inputs], 1);
        let out = self.base.infer(&base_cx)?;
        let y = &out[0];
        for s in &self.steps {
            if let Step::Add { operand } = s {
                let t = cx.ty(*operand)?;
                if *operand < self.base_inputs || t.dtype != y.dtype || broadcast_shapes(&y.shape, &t.shape)? != y.shape
                {
                    invalid!("epilogue operand {operand} ({t}) does not broadcast to the output {y}");
                }
            }
        }
        Ok(vec![y.clone()])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let base = inputs.get(..self.base_inputs).ok_or_else(|| OpError::Invalid("missing inputs".into()))?;
        let mut y = self.base.eval(base)?.remove(0);
        for s in &self.steps {
            y = match s {
                Step::Add { operand } => Binary::Add.eval(&[Some(&y), Some(input(inputs, *operand)?)])?.remove(0),
                Step::Act(a) => a.apply(&y)?,
            };
        }
        Ok(vec![y])
    }

    fn attrs(&self) -> AttrList {
        self.base.attrs()
    }

    fn macs(&self, inputs: &[Option<&TensorType>], outputs: &[TensorType]) -> u64 {
        self.base.macs(&inputs[..self.base_inputs.min(inputs.len())], outputs)
    }
}

/// An expression over the node's inputs.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Input(usize),
    Act(Activation, Box<Expr>),
    Binary(Binary, Box<Expr>, Box<Expr>),
}

impl Expr {
    /// Most ops one expression holds. Fusion starts a new Elementwise past it (so a chain of
    /// any length fuses in linear time), the text parser refuses deeper nesting, and every walk
    /// over an expression (inference, evaluation, printing, code generation) stays this shallow.
    pub const MAX_OPS: usize = 64;

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Tensor, OpError> {
        Ok(match self {
            Expr::Input(i) => input(inputs, *i)?.clone(),
            Expr::Act(a, e) => a.apply(&e.eval(inputs)?)?,
            Expr::Binary(b, l, r) => {
                let (l, r) = (l.eval(inputs)?, r.eval(inputs)?);
                b.eval(&[Some(&l), Some(&r)])?.remove(0)
            }
        })
    }

    fn infer(&self, cx: &InferCx) -> Result<TensorType, OpError> {
        Ok(match self {
            Expr::Input(i) => cx.ty(*i)?.clone(),
            Expr::Act(_, e) => {
                let t = e.infer(cx)?;
                expect_float(&t, "operand")?;
                t
            }
            Expr::Binary(b, l, r) => {
                let (l, r) = (l.infer(cx)?, r.infer(cx)?);
                let args = [Some(InferInput { ty: &l, value: None }), Some(InferInput { ty: &r, value: None })];
                let mut b = *b;
                b.infer(&InferCx::new(&args, 1))?.remove(0)
            }
        })
    }

    /// Text form, with `names[i]` for input i.
    pub fn text(&self, names: &[String]) -> String {
        match self {
            Expr::Input(i) => names.get(*i).cloned().unwrap_or_else(|| format!("${i}")),
            Expr::Act(Activation::Clip { min, max }, e) => {
                let bound = |v: &Option<f32>| v.map_or("_".to_string(), fmt_f32);
                format!("clip({}, {}, {})", e.text(names), bound(min), bound(max))
            }
            Expr::Act(a, e) => {
                let t = a.text();
                match t.split_once('(') {
                    Some((name, params)) => format!("{name}({}, {params}", e.text(names)),
                    None => format!("{t}({})", e.text(names)),
                }
            }
            Expr::Binary(b, l, r) => {
                format!("{}({}, {})", snake(b.name()).replace("p_relu", "prelu"), l.text(names), r.text(names))
            }
        }
    }

    /// Number of ops in the expression.
    pub fn ops(&self) -> usize {
        match self {
            Expr::Input(_) => 0,
            Expr::Act(_, e) => 1 + e.ops(),
            Expr::Binary(_, l, r) => 1 + l.ops() + r.ops(),
        }
    }
}

/// A binary op by its text name (`add`, `mul`, `prelu`, ...).
pub fn binary_from_text(name: &str) -> Option<Binary> {
    [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div, Binary::Pow, Binary::PRelu]
        .into_iter()
        .find(|b| snake(b.name()).replace("p_relu", "prelu") == name)
}

/// Several elementwise ops fused into one: `expr` over the node's inputs, with numpy broadcasting
/// at every step as the original ops had.
#[derive(Clone, Debug)]
pub struct Elementwise {
    pub expr: Expr,
}

impl OpDef for Elementwise {
    fn name(&self) -> &'static str {
        "Elementwise"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        Ok(vec![self.expr.infer(cx)?])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![self.expr.eval(inputs)?])
    }
}
