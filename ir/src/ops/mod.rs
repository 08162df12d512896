//! The supported ops. Each family file holds, for its ops, the typed attributes (read from and
//! written to [`Attrs`]), shape inference, and the reference semantics (`eval`): one op's meaning
//! lives in one place, and everything else (passes, kernels, constant folding) is checked against it.

use crate::attrs::{AttrList, Attrs};
use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;

pub mod attention;
pub mod binary;
pub mod conv;
pub mod einsum;
pub mod elementwise;
pub mod fused;
pub mod layout;
pub mod logic;
pub mod matmul;
pub mod norm;
pub mod onnx_ops;
pub mod pad;
pub mod pool;
pub mod qlinear;
pub mod quant;
pub mod reduce;
pub mod resize;
pub mod scatter;
pub mod select;
pub mod shape_ops;
pub mod softmax;

pub use attention::Attention;
pub use binary::{Binary, Variadic};
pub use conv::{Conv, ConvTranspose};
pub use einsum::Einsum;
pub use elementwise::{Cast, Clip, Dropout, Identity, Unary};
pub use fused::{Activation, Elementwise, Expr, Fused, Step};
pub use layout::{
    Concat, DepthToSpace, Expand, Flatten, Reshape, Slice, SpaceToDepth, Split, Squeeze, Tile, Transpose, Unsqueeze,
};
pub use logic::{Compare, Logical, Mod, Where};
pub use matmul::{Gemm, MatMul};
pub use norm::{BatchNorm, InstanceNorm, LayerNorm, Lrn};
pub use pad::Pad;
pub use pool::{GlobalPool, Pool, PoolKind};
pub use qlinear::{
    QBinaryKind, QGemm, QLinearAveragePool, QLinearBinary, QLinearConcat, QLinearGlobalAveragePool, QLinearLookup,
    QLinearSoftmax,
};
pub use quant::{
    ConvInteger, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger, QLinearConv, QLinearMatMul, QuantizeLinear,
};
pub use reduce::{Reduce, ReduceKind};
pub use resize::Resize;
pub use scatter::{GatherElements, GatherNd, ScatterNd};
pub use select::{ArgReduce, TopK};
pub use shape_ops::{ConstantOfShape, Gather, Range, ShapeOf};
pub use softmax::Softmax;

/// What shape inference sees of one input: its type, and its value when known at compile time
/// (a constant, or computed from constants, e.g. the output of a `Shape` node on a static shape).
#[derive(Clone, Copy)]
pub struct InferInput<'a> {
    pub ty: &'a TensorType,
    pub value: Option<&'a Tensor>,
}

/// The inputs of one node during shape inference.
pub struct InferCx<'a> {
    inputs: &'a [Option<InferInput<'a>>],
    /// How many outputs the node declares.
    pub n_outputs: usize,
}

impl<'a> InferCx<'a> {
    pub fn new(inputs: &'a [Option<InferInput<'a>>], n_outputs: usize) -> InferCx<'a> {
        InferCx { inputs, n_outputs }
    }

    /// Number of input slots (including absent optional ones).
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    pub fn has(&self, i: usize) -> bool {
        matches!(self.inputs.get(i), Some(Some(_)))
    }

    /// The type of a required input.
    pub fn ty(&self, i: usize) -> Result<&'a TensorType, OpError> {
        match self.inputs.get(i) {
            Some(Some(x)) => Ok(x.ty),
            _ => Err(OpError::Invalid(format!("input {i} is required but missing"))),
        }
    }

    pub fn opt_ty(&self, i: usize) -> Option<&'a TensorType> {
        self.inputs.get(i).and_then(|x| x.as_ref()).map(|x| x.ty)
    }

    /// The value of an input when it is known at compile time.
    pub fn value(&self, i: usize) -> Option<&'a Tensor> {
        self.inputs.get(i).and_then(|x| x.as_ref()).and_then(|x| x.value)
    }

    /// Checks the number of input slots.
    pub fn arity(&self, min: usize, max: usize) -> Result<(), OpError> {
        let n = self.inputs.len();
        if n < min || n > max {
            if min == max {
                invalid!("expects {min} input(s), found {n}");
            }
            invalid!("expects {min} to {max} inputs, found {n}");
        }
        for i in 0..min {
            self.ty(i)?;
        }
        Ok(())
    }

    /// An integer input that shapes the output (a shape, axes, pads, ...): `None` when absent,
    /// an error when present but not known at compile time.
    pub fn const_ints(&self, i: usize, what: &str) -> Result<Option<Vec<i64>>, OpError> {
        let Some(ty) = self.opt_ty(i) else { return Ok(None) };
        if !ty.dtype.is_int() {
            invalid!("{what} (input {i}) must be an integer tensor, found {}", ty.dtype);
        }
        match self.value(i) {
            Some(v) => Ok(Some(v.to_i64s()?)),
            None => Err(OpError::DynamicShape(format!(
                "{what} (input {i}) is computed at run time; incept needs it known at compile time \
                 (bind symbolic dimensions with ImportOptions::dims or input_shapes if it comes from the input shape)"
            ))),
        }
    }

    /// A float input that shapes the output (e.g. Resize scales).
    pub fn const_floats(&self, i: usize, what: &str) -> Result<Option<Vec<f64>>, OpError> {
        let Some(_) = self.opt_ty(i) else { return Ok(None) };
        match self.value(i) {
            Some(v) => Ok(Some(v.to_f64s()?)),
            None => Err(OpError::DynamicShape(format!(
                "{what} (input {i}) is computed at run time; incept needs it known at compile time"
            ))),
        }
    }
}

/// A required input at evaluation time.
pub fn input<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor, OpError> {
    match inputs.get(i) {
        Some(Some(t)) => Ok(t),
        _ => Err(OpError::Invalid(format!("input {i} is required but missing"))),
    }
}

/// An optional input at evaluation time.
pub fn opt_input<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

/// What every op provides.
pub trait OpDef {
    /// The ONNX op type.
    fn name(&self) -> &'static str;
    /// Output types from input types (and known input values). May resolve shape-dependent
    /// attributes into explicit form (e.g. `auto_pad` into pads, absent `kernel_shape` from the
    /// weights), so that everything after import sees one canonical form.
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError>;
    /// Reference semantics.
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError>;
    /// Attributes in the order the text form prints them.
    fn attrs(&self) -> AttrList {
        vec![]
    }
    /// Multiply-accumulates for one run, given the input and output types (0 for ops that do none).
    fn macs(&self, _inputs: &[Option<&TensorType>], _outputs: &[TensorType]) -> u64 {
        0
    }
}

/// A graph input (a placeholder; its value comes from the caller).
#[derive(Clone, Debug)]
pub struct InputOp;

impl OpDef for InputOp {
    fn name(&self) -> &'static str {
        "input"
    }
    fn infer(&mut self, _: &InferCx) -> Result<Vec<TensorType>, OpError> {
        invalid!("a graph input has no inputs to infer from")
    }
    fn eval(&self, _: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        invalid!("graph input has no value")
    }
}

/// A constant: an initializer or a `Constant` node.
#[derive(Clone, Debug)]
pub struct Const {
    pub value: Tensor,
}

impl OpDef for Const {
    fn name(&self) -> &'static str {
        "const"
    }
    fn infer(&mut self, _: &InferCx) -> Result<Vec<TensorType>, OpError> {
        Ok(vec![TensorType::known(self.value.dtype(), self.value.shape())])
    }
    fn eval(&self, _: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![self.value.clone()])
    }
}

macro_rules! op_enum {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        /// An op of the graph IR with its typed attributes.
        #[derive(Clone, Debug)]
        pub enum Op { $($variant($ty)),* }

        impl Op {
            pub fn def(&self) -> &dyn OpDef {
                match self { $(Op::$variant(o) => o),* }
            }
            pub fn def_mut(&mut self) -> &mut dyn OpDef {
                match self { $(Op::$variant(o) => o),* }
            }
        }
    };
}

op_enum! {
    Input(InputOp),
    Const(Const),
    Identity(Identity),
    Unary(Unary),
    Clip(Clip),
    Cast(Cast),
    Dropout(Dropout),
    Binary(Binary),
    Variadic(Variadic),
    Compare(Compare),
    Logical(Logical),
    Where(Where),
    Mod(Mod),
    Conv(Conv),
    ConvTranspose(ConvTranspose),
    BatchNorm(BatchNorm),
    LayerNorm(LayerNorm),
    InstanceNorm(InstanceNorm),
    Lrn(Lrn),
    Pool(Pool),
    GlobalPool(GlobalPool),
    Softmax(Softmax),
    Gemm(Gemm),
    MatMul(MatMul),
    Einsum(Einsum),
    Attention(Attention),
    Flatten(Flatten),
    Reshape(Reshape),
    Transpose(Transpose),
    Squeeze(Squeeze),
    Unsqueeze(Unsqueeze),
    Concat(Concat),
    Split(Split),
    Slice(Slice),
    Expand(Expand),
    Tile(Tile),
    DepthToSpace(DepthToSpace),
    SpaceToDepth(SpaceToDepth),
    Pad(Pad),
    Shape(ShapeOf),
    Gather(Gather),
    GatherNd(GatherNd),
    ScatterNd(ScatterNd),
    GatherElements(GatherElements),
    ArgReduce(ArgReduce),
    TopK(TopK),
    ConstantOfShape(ConstantOfShape),
    Range(Range),
    Reduce(Reduce),
    Resize(Resize),
    Fused(Fused),
    Elementwise(Elementwise),
    QuantizeLinear(QuantizeLinear),
    DequantizeLinear(DequantizeLinear),
    DynamicQuantizeLinear(DynamicQuantizeLinear),
    QLinearConv(QLinearConv),
    QLinearMatMul(QLinearMatMul),
    ConvInteger(ConvInteger),
    MatMulInteger(MatMulInteger),
    QLinearBinary(QLinearBinary),
    QLinearLookup(QLinearLookup),
    QLinearConcat(QLinearConcat),
    QLinearGlobalAveragePool(QLinearGlobalAveragePool),
    QLinearAveragePool(QLinearAveragePool),
    QLinearSoftmax(QLinearSoftmax),
    QGemm(QGemm),
}

impl Op {
    /// The op type as the text form and error messages show it (ONNX names, `input`, `const`).
    pub fn name(&self) -> &'static str {
        self.def().name()
    }

    pub fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        self.def_mut().infer(cx)
    }

    pub fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        self.def().eval(inputs)
    }

    pub fn attrs(&self) -> AttrList {
        self.def().attrs()
    }

    pub fn macs(&self, inputs: &[Option<&TensorType>], outputs: &[TensorType]) -> u64 {
        self.def().macs(inputs, outputs)
    }

    /// Builds an op from its ONNX op type and attributes (in their current-opset form; the importer
    /// rewrites older forms first). Attributes the op does not know are an error.
    pub fn from_attrs(op_type: &str, mut attrs: Attrs) -> Result<Op, OpError> {
        let info = op_info(op_type).ok_or_else(|| {
            OpError::Unsupported(match onnx_ops::first_opset(op_type) {
                Some(_) => format!("op type '{op_type}' (an ONNX operator incept does not support yet)"),
                None => format!("op type '{op_type}' (not an ONNX operator)"),
            })
        })?;
        let op = (info.build)(&mut attrs)?;
        attrs.finish()?;
        Ok(op)
    }
}

/// One supported ONNX op type: the registry that import, the text parser and the README's op
/// table all read.
pub struct OpInfo {
    pub name: &'static str,
    /// First ai.onnx opset that defines the op.
    pub since: i64,
    /// The family file that holds its semantics.
    pub family: &'static str,
    /// Limits and notes for users.
    pub notes: &'static str,
    pub build: fn(&mut Attrs) -> Result<Op, OpError>,
}

/// Lowest and highest ai.onnx opset versions incept accepts.
pub const MIN_OPSET: i64 = 6;
pub const MAX_OPSET: i64 = 28;

macro_rules! registry {
    ($($name:literal, $since:literal, $family:literal, $notes:literal => $build:expr;)*) => {
        /// Every supported ONNX op type.
        pub static OPS: &[OpInfo] = &[
            $(OpInfo { name: $name, since: $since, family: $family, notes: $notes, build: $build }),*
        ];
    };
}

registry! {
    "Abs", 6, "elementwise", "" => |a| Unary::build("Abs", a);
    "Add", 6, "binary", "numpy broadcasting (opset 6: broadcast/axis attributes)" => |a| Binary::build("Add", a);
    "And", 7, "logic", "bool" => |a| Logical::build("And", a);
    "ArgMax", 1, "select", "any numeric type; NaN counts as the largest; keepdims, select_last_index" => |a| ArgReduce::build(true, a);
    "ArgMin", 1, "select", "any numeric type; NaN counts as the largest; keepdims, select_last_index" => |a| ArgReduce::build(false, a);
    "Attention", 23, "attention", "masks (bool, float, shorter than the keys), causal, key/value cache, grouped-query heads, softcap, qk output modes" => Attention::build;
    "AveragePool", 1, "pool", "ceil_mode, count_include_pad, asymmetric pads, dilations" => |a| Pool::build(PoolKind::Avg, a);
    "BatchNormalization", 6, "norm", "inference mode only; old spatial = 0 form" => BatchNorm::build;
    "Cast", 6, "elementwise", "between f32, f64, int and bool types" => Cast::build;
    "Clip", 6, "elementwise", "min/max as attributes before opset 11, inputs after" => Clip::build;
    "Concat", 4, "layout", "" => Concat::build;
    "Constant", 1, "const", "value, value_float(s), value_int(s)" => |_| invalid!("Constant nodes become constants at import");
    "ConstantOfShape", 9, "shape", "" => ConstantOfShape::build;
    "Conv", 1, "conv", "any group count, strides, dilations, pads, auto_pad" => Conv::build;
    "ConvInteger", 10, "quant", "u8/i8 inputs, zero points per tensor (input) and per output channel (weights); i32 sums wrap" => ConvInteger::build;
    "ConvTranspose", 1, "conv", "groups, strides, dilations, output_padding, output_shape" => ConvTranspose::build;
    "DepthToSpace", 1, "layout", "DCR and CRD modes" => DepthToSpace::build;
    "DequantizeLinear", 10, "quant", "i8, u8, i16, u16, i32 inputs; per tensor or per axis; f32 output; not blocked (block_size 0)" => DequantizeLinear::build;
    "Div", 6, "binary", "numpy broadcasting (opset 6: broadcast/axis attributes)" => |a| Binary::build("Div", a);
    "Dropout", 6, "elementwise", "inference: identity, mask of ones" => Dropout::build;
    "DynamicQuantizeLinear", 11, "quant", "u8 output; an all-zero input gives scale 1 (as ONNX Runtime)" => DynamicQuantizeLinear::build;
    "Einsum", 12, "einsum", "any equation (ellipsis, implicit output, diagonals); two-input forms compile to MatMul" => Einsum::build;
    "Elu", 6, "elementwise", "" => |a| Unary::build("Elu", a);
    "Equal", 7, "logic", "numbers and bools; NaN is unequal" => |a| Compare::build("Equal", a);
    "Erf", 9, "elementwise", "" => |a| Unary::build("Erf", a);
    "Exp", 6, "elementwise", "" => |a| Unary::build("Exp", a);
    "Expand", 8, "layout", "" => Expand::build;
    "Flatten", 1, "layout", "" => Flatten::build;
    "Gather", 1, "shape", "" => Gather::build;
    "GatherElements", 11, "scatter", "i32 or i64 indices, negative ones from the end" => GatherElements::build;
    "GatherND", 11, "scatter", "batch_dims = 0" => GatherNd::build;
    "Gelu", 20, "elementwise", "exact (erf) and tanh approximation" => |a| Unary::build("Gelu", a);
    "Gemm", 6, "matmul", "" => Gemm::build;
    "GlobalAveragePool", 1, "pool", "" => |a| GlobalPool::build(PoolKind::Avg, a);
    "GlobalMaxPool", 1, "pool", "" => |a| GlobalPool::build(PoolKind::Max, a);
    "Greater", 7, "logic", "" => |a| Compare::build("Greater", a);
    "GreaterOrEqual", 12, "logic", "" => |a| Compare::build("GreaterOrEqual", a);
    "HardSigmoid", 6, "elementwise", "" => |a| Unary::build("HardSigmoid", a);
    "HardSwish", 14, "elementwise", "" => |a| Unary::build("HardSwish", a);
    "Identity", 1, "elementwise", "" => |a| Identity::build(a);
    "InstanceNormalization", 6, "norm", "" => InstanceNorm::build;
    "LRN", 1, "norm", "" => Lrn::build;
    "LayerNormalization", 17, "norm", "any axis; scale and bias broadcast; mean and inverse std outputs" => LayerNorm::build;
    "LeakyRelu", 6, "elementwise", "" => |a| Unary::build("LeakyRelu", a);
    "Less", 7, "logic", "" => |a| Compare::build("Less", a);
    "LessOrEqual", 12, "logic", "" => |a| Compare::build("LessOrEqual", a);
    "Log", 6, "elementwise", "" => |a| Unary::build("Log", a);
    "LogSoftmax", 1, "softmax", "2-D coercion before opset 13" => |a| Softmax::build(true, a);
    "MatMul", 1, "matmul", "batched, numpy broadcasting" => MatMul::build;
    "MatMulInteger", 10, "quant", "u8/i8; zero points per tensor, per row of A, per column of B; i32 sums wrap" => MatMulInteger::build;
    "Max", 6, "binary", "variadic, numpy broadcasting" => |a| Variadic::build("Max", a);
    "MaxPool", 1, "pool", "ceil_mode, dilations, asymmetric pads, Indices output; u8 and i8 inputs (the JIT runs f32)" => |a| Pool::build(PoolKind::Max, a);
    "Min", 6, "binary", "variadic, numpy broadcasting" => |a| Variadic::build("Min", a);
    "Mod", 10, "logic", "fmod 0 (integers, divisor's sign) and 1 (dividend's sign)" => Mod::build;
    "Mul", 6, "binary", "numpy broadcasting (opset 6: broadcast/axis attributes)" => |a| Binary::build("Mul", a);
    "Neg", 6, "elementwise", "" => |a| Unary::build("Neg", a);
    "Not", 1, "logic", "bool" => |a| Logical::build("Not", a);
    "Or", 7, "logic", "bool" => |a| Logical::build("Or", a);
    "PRelu", 6, "binary", "slope broadcast to the input" => |a| Binary::build("PRelu", a);
    "Pad", 2, "pad", "constant, reflect, edge" => Pad::build;
    "Pow", 1, "binary", "numpy broadcasting; exponent may have another numeric type" => |a| Binary::build("Pow", a);
    "QLinearConv", 10, "quant", "u8/i8; weight scales per tensor or per output channel; i32 bias; requantised in f32, rounded half to even" => QLinearConv::build;
    "QLinearMatMul", 10, "quant", "u8/i8; B scales per tensor or per column; requantised in f32, rounded half to even" => QLinearMatMul::build;
    "QuantizeLinear", 10, "quant", "f32 input to i8, u8, i16, u16; per tensor or per axis; x / scale rounded half to even, saturated; not blocked" => QuantizeLinear::build;
    "Range", 11, "shape", "" => Range::build;
    "ReduceL1", 1, "reduce", "" => |a| Reduce::build(ReduceKind::L1, a);
    "ReduceL2", 1, "reduce", "" => |a| Reduce::build(ReduceKind::L2, a);
    "ReduceLogSum", 1, "reduce", "" => |a| Reduce::build(ReduceKind::LogSum, a);
    "ReduceLogSumExp", 1, "reduce", "shifted by the largest element" => |a| Reduce::build(ReduceKind::LogSumExp, a);
    "ReduceMax", 1, "reduce", "" => |a| Reduce::build(ReduceKind::Max, a);
    "ReduceMean", 1, "reduce", "" => |a| Reduce::build(ReduceKind::Mean, a);
    "ReduceMin", 1, "reduce", "" => |a| Reduce::build(ReduceKind::Min, a);
    "ReduceProd", 1, "reduce", "" => |a| Reduce::build(ReduceKind::Prod, a);
    "ReduceSum", 1, "reduce", "" => |a| Reduce::build(ReduceKind::Sum, a);
    "ReduceSumSquare", 1, "reduce", "" => |a| Reduce::build(ReduceKind::SumSquare, a);
    "Relu", 6, "elementwise", "" => |a| Unary::build("Relu", a);
    "Reshape", 5, "layout", "allowzero" => Reshape::build;
    "Resize", 10, "resize", "nearest, linear, cubic, antialias; every coordinate transform" => Resize::build;
    "ScatterND", 11, "scatter", "reductions none, add, mul, max, min" => ScatterNd::build;
    "Shape", 1, "shape", "start/end" => ShapeOf::build;
    "Sigmoid", 6, "elementwise", "" => |a| Unary::build("Sigmoid", a);
    "Slice", 1, "layout", "" => Slice::build;
    "Softmax", 1, "softmax", "2-D coercion before opset 13" => |a| Softmax::build(false, a);
    "SpaceToDepth", 1, "layout", "" => SpaceToDepth::build;
    "Split", 2, "layout", "" => Split::build;
    "Sqrt", 6, "elementwise", "" => |a| Unary::build("Sqrt", a);
    "Squeeze", 1, "layout", "" => Squeeze::build;
    "Sub", 6, "binary", "numpy broadcasting (opset 6: broadcast/axis attributes)" => |a| Binary::build("Sub", a);
    "Sum", 6, "binary", "variadic, numpy broadcasting" => |a| Variadic::build("Sum", a);
    "Swish", 24, "elementwise", "x * sigmoid(alpha x)" => |a| Unary::build("Swish", a);
    "Tanh", 6, "elementwise", "" => |a| Unary::build("Tanh", a);
    "Tile", 6, "layout", "repeats known at compile time" => Tile::build;
    "TopK", 1, "select", "K known at compile time; largest/smallest; NaN counts as the largest; always sorted" => TopK::build;
    "Transpose", 1, "layout", "" => Transpose::build;
    "Unsqueeze", 1, "layout", "" => Unsqueeze::build;
    "Upsample", 7, "resize", "deprecated; imported as Resize" => |_| invalid!("Upsample nodes become Resize at import");
    "Where", 9, "logic", "any element type" => |_| Ok(Op::Where(Where));
    "Xor", 7, "logic", "bool" => |a| Logical::build("Xor", a);
}

/// The domain of ONNX Runtime's contrib operators.
pub const MS_DOMAIN: &str = "com.microsoft";

/// Supported operators of domain `com.microsoft` (ONNX Runtime's contrib operators that its
/// QOperator quantization writes); `since` is that domain's opset.
pub static MS_OPS: &[OpInfo] = &[
    OpInfo {
        name: "QGemm",
        since: 1,
        family: "qlinear",
        notes: "A u8/i8, B u8/i8 (per tensor or per column), i32 C; f32 or quantized output",
        build: QGemm::build,
    },
    OpInfo {
        name: "QLinearAdd",
        since: 1,
        family: "qlinear",
        notes: "u8/i8, per-tensor; ONNX Runtime's AVX2 arithmetic (fused multiply-adds)",
        build: |a| QLinearBinary::build(QBinaryKind::Add, a),
    },
    OpInfo {
        name: "QLinearAveragePool",
        since: 1,
        family: "qlinear",
        notes: "u8/i8, per-tensor; channels_last; no dilations",
        build: QLinearAveragePool::build,
    },
    OpInfo {
        name: "QLinearConcat",
        since: 1,
        family: "qlinear",
        notes: "u8/i8, per-tensor; each input requantised to the output's scale",
        build: QLinearConcat::build,
    },
    OpInfo {
        name: "QLinearGlobalAveragePool",
        since: 1,
        family: "qlinear",
        notes: "u8/i8, per-tensor; channels_last; integer sums",
        build: QLinearGlobalAveragePool::build,
    },
    OpInfo {
        name: "QLinearLeakyRelu",
        since: 1,
        family: "qlinear",
        notes: "u8/i8, per-tensor; 256-entry table",
        build: QLinearLookup::build_leaky_relu,
    },
    OpInfo {
        name: "QLinearMul",
        since: 1,
        family: "qlinear",
        notes: "u8/i8, per-tensor",
        build: |a| QLinearBinary::build(QBinaryKind::Mul, a),
    },
    OpInfo {
        name: "QLinearSigmoid",
        since: 1,
        family: "qlinear",
        notes: "u8/i8, per-tensor; 256-entry table of the exact sigmoid (ONNX Runtime's approximation may differ by one step)",
        build: QLinearLookup::build_sigmoid,
    },
    OpInfo {
        name: "QLinearSoftmax",
        since: 1,
        family: "qlinear",
        notes: "u8/i8; opset attribute (2-D coercion below 13)",
        build: QLinearSoftmax::build,
    },
];

/// Looks up a supported op type (of ai.onnx or com.microsoft: the names do not overlap).
pub fn op_info(name: &str) -> Option<&'static OpInfo> {
    OPS.iter().chain(MS_OPS).find(|o| o.name == name)
}

/// Looks up a supported op type of one domain (`""`/`ai.onnx` or [`MS_DOMAIN`]).
pub fn domain_op_info(domain: &str, name: &str) -> Option<&'static OpInfo> {
    let table = if domain == MS_DOMAIN { MS_OPS } else { OPS };
    table.iter().find(|o| o.name == name)
}

/// Normalises a possibly negative axis against a rank.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize, OpError> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        invalid!("axis {axis} is out of range for rank {rank}");
    }
    Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
}

/// Checks that an input has a float dtype the reference semantics covers (f32 or f64).
pub fn expect_float(ty: &TensorType, what: &str) -> Result<(), OpError> {
    match ty.dtype {
        DType::F32 | DType::F64 => Ok(()),
        d => Err(OpError::Unsupported(format!("{what} of type {d} (only f32 and f64)"))),
    }
}

/// Checks that two inputs share a dtype.
pub fn same_dtype(a: &TensorType, b: &TensorType, what: &str) -> Result<(), OpError> {
    if a.dtype != b.dtype {
        invalid!("{what}: input types differ ({} vs {})", a.dtype, b.dtype);
    }
    Ok(())
}

/// A dim that must be known for an op's shape computation.
pub fn need_known(d: &Dim, what: &str) -> Result<usize, OpError> {
    d.known().ok_or_else(|| {
        OpError::DynamicShape(format!(
            "{what} is the symbolic dimension '{d}'; bind it with ImportOptions::dims or input_shapes"
        ))
    })
}

/// Row-major strides of a shape.
pub fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Calls `f` with every multi-index of `shape` in row-major order.
pub fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; shape.len()];
    loop {
        f(&idx);
        let mut k = shape.len();
        loop {
            if k == 0 {
                return;
            }
            k -= 1;
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

/// Runs `f` over a tensor of any dtype by its typed elements, for ops that only move elements.
#[macro_export]
macro_rules! with_dtype {
    ($dt:expr, $T:ident => $body:expr) => {{
        use $crate::dtype::DType;
        match $dt {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
            DType::I8 => {
                type $T = i8;
                $body
            }
            DType::U8 | DType::Bool => {
                type $T = u8;
                $body
            }
            DType::I16 => {
                type $T = i16;
                $body
            }
            DType::U16 | DType::F16 => {
                type $T = u16;
                $body
            }
            DType::I32 => {
                type $T = i32;
                $body
            }
            DType::U32 => {
                type $T = u32;
                $body
            }
            DType::I64 => {
                type $T = i64;
                $body
            }
            DType::U64 => {
                type $T = u64;
                $body
            }
        }
    }};
}

/// A typed view that treats Bool as u8 and F16 as u16 bit patterns (for ops that only move
/// elements around).
pub fn raw_view<T: crate::tensor::Element>(t: &Tensor) -> Result<std::borrow::Cow<'_, [T]>, OpError> {
    match (t.dtype(), T::DTYPE) {
        (DType::Bool, DType::U8) | (DType::F16, DType::U16) => {
            Ok(std::borrow::Cow::Owned(bytemuck::pod_collect_to_vec(t.bytes())))
        }
        _ => Ok(t.view::<T>()?),
    }
}

/// Builds a tensor of `dtype` from elements of its storage type (the inverse of [`raw_view`]).
pub fn raw_tensor<T: crate::tensor::Element>(dtype: DType, shape: Vec<usize>, v: Vec<T>) -> Result<Tensor, OpError> {
    let t = Tensor::from_vec(shape, v);
    if dtype == t.dtype() {
        return Ok(t);
    }
    Ok(Tensor::from_bytes(dtype, t.shape().to_vec(), t.bytes().clone())?)
}

/// The supported-op table as Markdown (the README embeds it; a test keeps the two equal).
pub fn markdown_table() -> String {
    let mut s = "| op | opsets | notes |\n|---|---|---|\n".to_string();
    for o in OPS {
        let from = o.since.max(MIN_OPSET);
        s.push_str(&format!("| {} | {from}-{MAX_OPSET} | {} |\n", o.name, o.notes));
    }
    s.push_str(&format!("\nONNX Runtime's quantized operators of domain `{MS_DOMAIN}` (opset 1):\n\n"));
    s.push_str("| op | notes |\n|---|---|\n");
    for o in MS_OPS {
        s.push_str(&format!("| {} | {} |\n", o.name, o.notes));
    }
    s
}
