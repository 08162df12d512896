//! Lowering: the optimised graph becomes a kernel plan: kernel specs (deduplicated), buffers
//! (arena, weights, graph inputs and outputs) and the steps that call kernels on them.
//! Reshape-like ops become views of their input's buffer; weights are packed once here into the
//! layout their kernel wants.

mod buffers;
mod conv;
mod elementwise;
mod fault;
mod gemm;
mod index;
mod int8;
mod layout;
mod linear;
mod norm;
mod packing;
mod pool;
mod qlinear;
mod quant;
mod reduce;
mod resize;
mod winograd;
pub use conv::ARENA_OVERREAD;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use incept_ir::graph::{Graph, NodeId, ValueId};
use incept_ir::ops::PoolKind;
use incept_ir::{DType, Op, Tensor};

use incept_runtime::buffer::AlignedBuf;

use crate::Fault;
use crate::codegen::bf16::Bf16Tier;
use crate::codegen::kernels::logic::LogicOp;
use crate::codegen::{KernelSpec, Tier};

/// Errors of lowering, naming the node.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("node '{node}' ({op}): the JIT backend does not support {what}")]
    Unsupported { node: String, op: String, what: String },
    #[error("value '{0}' has a symbolic shape; bind it with ImportOptions::dims or input_shapes before compiling")]
    Symbolic(String),
    #[error("{0}")]
    Graph(#[from] incept_ir::Error),
    #[error("injected fault: {0}")]
    Fault(String),
}

pub type BufId = usize;

/// Where a buffer lives at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Arena,
    Input(usize),
    Output(usize),
    /// Byte offset in the packed weights.
    Weight(usize),
}

#[derive(Clone, Debug)]
pub struct Buffer {
    pub bytes: usize,
    pub place: Place,
    pub name: String,
}

/// A position in a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufRef {
    pub buf: BufId,
    pub offset: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LOperand {
    Buf(BufRef),
    Helpers,
    /// The entry of another kernel (by spec index): a microkernel the step's kernel calls.
    Kernel(usize),
}

/// One kernel call of the plan.
#[derive(Clone, Debug)]
pub struct LStep {
    pub kernel: usize,
    pub operands: Vec<LOperand>,
    pub tiles: usize,
    pub name: String,
    pub op: String,
    pub flops: u64,
    /// Buffers the step reads and writes (for lifetimes).
    pub reads: Vec<BufId>,
    pub writes: Vec<BufId>,
    /// Which operands (by position) the kernel writes through; operands past the end (the helper
    /// table, called kernels) it only reads.
    pub written: Vec<bool>,
    /// `(read, written)` buffer pairs the kernel may run in place on: it reads each element of
    /// `read` only for the element at the same offset of `written`, before writing it. The memory
    /// plan lets `written` take over `read`'s memory when `read` dies at this step.
    pub in_place: Vec<(BufId, BufId)>,
    /// What a nonzero status word after this step means (for kernels that validate their data).
    pub check: Option<String>,
}

/// The name, dtype and shape of a graph input or output.
#[derive(Clone, Debug)]
pub struct Io {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub buf: BufId,
}

/// The lowered model.
pub struct Lowered {
    pub buffers: Vec<Buffer>,
    pub steps: Vec<LStep>,
    pub specs: Vec<Arc<dyn KernelSpec>>,
    /// The packed weights, 64-byte aligned, in the layout the plan keeps them.
    pub weights: AlignedBuf,
    pub inputs: Vec<Io>,
    pub outputs: Vec<Io>,
    /// The i64 status word that checking kernels set (an arena buffer alive for the whole run).
    pub status: Option<BufId>,
    /// Where each computed value lives, and how many steps have run when it is complete (its
    /// bytes can be read right after step `ready - 1`, before any later step reuses them).
    pub values: Vec<ValueLoc>,
}

/// A computed value's place in the plan (for tools that read intermediate values).
#[derive(Clone, Debug)]
pub struct ValueLoc {
    pub value: ValueId,
    pub at: BufRef,
    pub bytes: usize,
    pub ready: usize,
}

pub(crate) struct Lowerer<'g> {
    g: &'g Graph,
    out: Lowered,
    values: HashMap<ValueId, BufRef>,
    spec_keys: HashMap<String, usize>,
    /// Where values must be written, decided before their producers are lowered (a concat's
    /// inputs are written straight into their slice of its output).
    placed: HashMap<ValueId, BufRef>,
    fault: Option<Fault>,
    /// The instruction set of the GEMM kernels (and the panel shapes that feed them).
    tier: Tier,
    /// The instruction set of bf16 convs; None: everything in f32.
    bf16: Option<Bf16Tier>,
    /// Packed conv panels above this size are built band by band.
    band_bytes: usize,
    winograd: WinogradChoice,
    /// The least row fill of a bf16 implicit conv.
    implicit_min_fill: f64,
    /// int8 convs may run on the AVX512-VNNI tile.
    int8_isa: Option<crate::codegen::int8::Int8Isa>,
    /// Quad planes forced on or off (None: by cost).
    int8_planes: Option<bool>,
}

/// How 3x3 convolutions choose their Winograd tile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WinogradChoice {
    /// The tile forced wherever Winograd applies (a test knob).
    pub forced: Option<usize>,
    /// Let the cost model pick F(4x4, 3x3) where it is faster. Off by default: its rounding
    /// error is several times F(2x2, 3x3)'s (InceptionV3's output moved 1.2e-4 of its scale
    /// from the f64 reference with it, 2.1e-5 without), for 4-7% of latency.
    pub f4: bool,
}

/// Lowering choices that options and tests may set.
#[derive(Clone, Debug, Default)]
pub struct Knobs {
    /// Nodes (of the optimised graph) that stay f32 in a bf16 plan.
    pub f32_nodes: std::collections::HashSet<String>,
    /// Packed conv panels above this size are built band by band (None: 1 MiB).
    pub im2col_band_bytes: Option<usize>,
    pub winograd: WinogradChoice,
    /// The least row fill of a bf16 implicit conv (None: `conv::IMPLICIT_MIN_FILL`).
    pub implicit_min_fill: Option<f64>,
    /// int8 convs may run on the AVX512-VNNI tile.
    pub int8_isa: Option<crate::codegen::int8::Int8Isa>,
    /// Stride-1 windowed int8 convs over quad planes always or never (None: by cost).
    pub int8_planes: Option<bool>,
}

/// Bytes of the graph's constants.
fn constant_bytes(g: &Graph) -> usize {
    g.node_ids()
        .filter_map(|id| match &g.node(id).op {
            Op::Const(c) => Some(c.value.bytes().len()),
            _ => None,
        })
        .sum()
}

/// Lowers an optimised graph with static shapes, for the f32x4 tier.
pub fn lower(g: &Graph) -> Result<Lowered, LowerError> {
    lower_with(g, Tier::F32x4, None, None, &Knobs::default())
}

/// Lowers for a kernel tier (and a bf16 one for the convs that take bf16), with a deliberate miscompilation if asked (see [`Fault`]) and the
/// size above which conv panels are packed in bands (None: the default), and how Winograd tiles
/// are chosen.
pub fn lower_with(
    g: &Graph,
    tier: Tier,
    bf16: Option<Bf16Tier>,
    fault: Option<&Fault>,
    knobs: &Knobs,
) -> Result<Lowered, LowerError> {
    // A fault aimed at no node would make the test that injects it pass vacuously.
    if let Some(Fault::Corrupt { node }) = fault
        && !g.node_ids().any(|id| g.node(id).name == *node)
    {
        return Err(LowerError::Fault(format!("no node named '{node}' to corrupt")));
    }
    let mut l = Lowerer {
        g,
        fault: fault.cloned(),
        tier,
        bf16,
        band_bytes: knobs.im2col_band_bytes.unwrap_or(conv::IM2COL_BAND_BYTES),
        winograd: knobs.winograd,
        implicit_min_fill: knobs.implicit_min_fill.unwrap_or(conv::IMPLICIT_MIN_FILL),
        // The 512-bit tile on the AVX-512 tier; the 256-bit ones on it or the AVX2 tier.
        int8_planes: knobs.int8_planes,
        int8_isa: knobs.int8_isa.filter(|i| match i {
            crate::codegen::int8::Int8Isa::Avx512Vnni => tier == Tier::Avx512,
            _ => matches!(tier, Tier::Avx2 | Tier::Avx512),
        }),
        out: Lowered {
            buffers: vec![],
            steps: vec![],
            specs: vec![],
            // Room for every constant (and Winograd's 16/9 growth) up front: growing a buffer of
            // 100 MB copies it each time.
            weights: AlignedBuf::with_capacity(constant_bytes(g) * 2 + (1 << 20)),
            inputs: vec![],
            outputs: vec![],
            status: None,
            values: vec![],
        },
        values: HashMap::new(),
        spec_keys: HashMap::new(),
        placed: HashMap::new(),
    };
    for (k, v) in g.input_values().into_iter().enumerate() {
        let shape = l.shape(v)?;
        let ty = g.ty(v);
        let bytes = shape.iter().product::<usize>() * ty.dtype.size();
        let buf = l.buffer(bytes, Place::Input(k), &g.value(v).name);
        l.values.insert(v, BufRef { buf, offset: 0 });
        l.out.inputs.push(Io { name: g.value(v).name.clone(), dtype: ty.dtype, shape, buf });
    }
    let order = g.topo_order()?;
    l.place_concat_inputs(&order)?;
    for id in order {
        let node = g.node(id);
        if matches!(node.op, Op::Input(_) | Op::Const(_)) {
            continue;
        }
        // A node whose outputs are all empty computes nothing; its kernels would only see
        // degenerate loops.
        let outs: Vec<ValueId> = (0..node.outputs.len()).map(|k| ValueId::new(id, k)).collect();
        let mut empty = !outs.is_empty();
        for &v in &outs {
            empty &= l.shape(v)?.contains(&0);
        }
        if empty {
            for v in outs {
                l.define(v)?;
            }
            continue;
        }
        // Nodes kept in f32 (`--precision auto`) are lowered without the bf16 tier.
        let bf16 = l.bf16;
        if knobs.f32_nodes.contains(&node.name) {
            l.bf16 = None;
        }
        let lowered = l.node(id);
        l.bf16 = bf16;
        lowered?;
        if let Some(Fault::Corrupt { node: name }) = &l.fault
            && *name == node.name
        {
            l.corrupt(id)?;
        }
        let ready = l.out.steps.len();
        for v in outs {
            if let (Some(&at), true) = (l.values.get(&v), ready > 0) {
                let bytes = l.shape(v)?.iter().product::<usize>() * g.ty(v).dtype.size();
                l.out.values.push(ValueLoc { value: v, at, bytes, ready });
            }
        }
    }
    l.outputs()?;
    Ok(l.out)
}

impl<'g> Lowerer<'g> {
    pub(super) fn shape(&self, v: ValueId) -> Result<Vec<usize>, LowerError> {
        self.g.ty(v).static_dims().ok_or_else(|| LowerError::Symbolic(self.g.value(v).name.clone()))
    }

    pub(super) fn unsupported(&self, id: NodeId, what: impl Into<String>) -> LowerError {
        let node = self.g.node(id);
        LowerError::Unsupported { node: node.name.clone(), op: node.op.name().to_string(), what: what.into() }
    }

    pub(super) fn in_val(&self, id: NodeId, i: usize) -> Option<ValueId> {
        self.g.node(id).inputs().get(i).copied().flatten()
    }

    pub(super) fn f32_only(&self, id: NodeId, v: ValueId) -> Result<(), LowerError> {
        if self.g.ty(v).dtype != DType::F32 {
            return Err(self.unsupported(id, format!("{} data (the JIT computes in f32)", self.g.ty(v).dtype)));
        }
        Ok(())
    }

    /// Whether `v` is f64, for kernels with an f64 form; anything but f32 and f64 is refused.
    pub(super) fn f32_or_f64(&self, id: NodeId, v: ValueId) -> Result<bool, LowerError> {
        let f64 = self.g.ty(v).dtype == DType::F64;
        if !f64 {
            self.f32_only(id, v)?;
        }
        Ok(f64)
    }

    /// Refuses windows and filters with more taps than the kernels unroll into straight-line
    /// code (`MAX_UNROLLED_TAPS`): beyond it, code size and compile time blow up (a 2^31-tap
    /// pool that SAME padding made valid ran code generation out of memory).
    pub(super) fn unrolled_taps(&self, id: NodeId, taps: usize) -> Result<(), LowerError> {
        if taps > MAX_UNROLLED_TAPS {
            return Err(
                self.unsupported(id, format!("{taps} taps per output (the JIT unrolls at most {MAX_UNROLLED_TAPS})"))
            );
        }
        Ok(())
    }

    /// The value of `v` when it is known at compile time: a constant, or a ConstantOfShape
    /// (whose shape is static), evaluated by its reference semantics. Kernels that want constant
    /// weights (packed GEMM panels, Winograd) ask here; const-folding leaves large
    /// ConstantOfShape outputs unfolded so as not to bloat the model, and exporters build conv
    /// weights that way.
    pub(super) fn konst(&self, v: ValueId) -> Option<Cow<'g, Tensor>> {
        let g: &'g incept_ir::Graph = self.g;
        match &g.node(v.node).op {
            Op::Const(_) => g.const_value(v).map(Cow::Borrowed),
            Op::ConstantOfShape(c) => {
                let dims: Vec<i64> = g.ty(v).static_dims()?.iter().map(|&d| d as i64).collect();
                let shape = Tensor::from_vec(vec![dims.len()], dims);
                use incept_ir::ops::OpDef;
                c.eval(&[Some(&shape)]).ok()?.into_iter().next().map(Cow::Owned)
            }
            _ => None,
        }
    }

    /// Whether [`Self::konst`] knows `v`, without evaluating it.
    pub(super) fn is_konst(&self, v: ValueId) -> bool {
        matches!(self.g.node(v.node).op, Op::Const(_) | Op::ConstantOfShape(_)) && self.g.ty(v).static_dims().is_some()
    }

    /// Lowers one node: the family that computes its op appends its steps.
    pub(super) fn node(&mut self, id: NodeId) -> Result<(), LowerError> {
        let node = self.g.node(id);
        let out = ValueId::new(id, 0);
        if let Some(taps) = window_taps(&node.op) {
            self.unrolled_taps(id, taps)?;
        }
        match &node.op {
            // Views: same bytes, another shape.
            Op::Reshape(_) | Op::Flatten(_) | Op::Squeeze(_) | Op::Unsqueeze(_) | Op::Identity(_) | Op::Dropout(_) => {
                self.view(id)
            }
            Op::Unary(_) | Op::Binary(_) | Op::Clip(_) | Op::Elementwise(_) | Op::Variadic(_) => self.elementwise(id),
            // Written where it is first read as an activation (see `fill_constant`); kernels that
            // want it as constant weights evaluate it at compile time (see `konst`).
            Op::ConstantOfShape(_) => Ok(()),
            Op::Cast(c) => self.cast(id, c.to),
            Op::MatMul(_) if self.g.ty(out).dtype == DType::F64 => self.matmul_f64(id),
            Op::Conv(_) | Op::ConvTranspose(_) | Op::Gemm(_) | Op::MatMul(_) => {
                let all = node.inputs().len();
                self.linear(id, &node.op.clone(), all, &[])
            }
            Op::Fused(f) => {
                let f = f.clone();
                let base = match self.fault {
                    Some(Fault::EpilogueOperandAsBias) => node.inputs().len(),
                    _ => f.base_operands(node.inputs()).len(),
                };
                self.linear(id, &f.base, base, &f.steps)
            }
            Op::Pool(p) if p.kind == PoolKind::Max && self.g.ty(out).dtype != DType::F32 && node.outputs.len() == 1 => {
                let p = p.clone();
                self.qlinear_pool(id, &p.window, true, false, false)
            }
            Op::Pool(p) => {
                let p = p.clone();
                if node.outputs.len() > 1 {
                    return self.max_pool_with_indices(id, &p);
                }
                self.pool(id, p.kind == PoolKind::Max, &p.window, p.count_include_pad)
            }
            Op::GlobalPool(p) => self.global_pool(id, p.kind == PoolKind::Max),
            Op::Softmax(sm) => self.softmax(id, &sm.clone()),
            Op::Reduce(r) => self.reduce(id, &r.clone()),
            Op::Concat(c) => self.concat(id, c.axis as usize),
            Op::Split(sp) => self.split(id, sp.axis as usize),
            Op::Transpose(t) => self.transpose(id, &t.perm.clone()),
            Op::Expand(_) => self.expand(id),
            Op::Slice(_) => self.slice(id),
            Op::DepthToSpace(d) => self.depth_to_space(id, &d.clone()),
            Op::SpaceToDepth(d) => self.space_to_depth(id, d.blocksize),
            Op::Tile(_) => self.tile(id),
            Op::Pad(p) => self.pad(id, &p.clone()),
            Op::Gather(gt) => self.gather(id, gt.axis as usize),
            Op::GatherNd(_) => self.index_nd(id, None),
            Op::ScatterNd(sc) => self.scatter_nd(id, sc.reduction),
            Op::GatherElements(ge) => self.gather_elements(id, ge.axis as usize),
            Op::ArgReduce(a) => self.arg_reduce(id, &a.clone()),
            Op::TopK(t) => self.top_k(id, t.axis as usize, t.largest),
            Op::BatchNorm(bn) => self.batch_norm(id, bn.epsilon),
            Op::LayerNorm(ln) => self.layer_norm(id, &ln.clone()),
            Op::InstanceNorm(inn) => self.instance_norm(id, inn.epsilon),
            Op::Lrn(l) => self.lrn(id, &l.clone()),
            Op::Resize(r) => self.resize(id, &r.clone()),
            Op::Compare(c) => self.logic(id, LogicOp::Compare(*c)),
            Op::Logical(l) => self.logic(id, LogicOp::Logical(*l)),
            Op::Where(_) => self.logic(id, LogicOp::Where),
            Op::Mod(m) => self.logic(id, LogicOp::Mod { fmod: m.fmod }),
            Op::QuantizeLinear(q) => self.quant(id, true, q.axis),
            Op::DequantizeLinear(d) => self.quant(id, false, d.axis),
            Op::QLinearConv(q) => self.int_conv(id, true, &q.conv.window.clone(), q.conv.group),
            Op::ConvInteger(q) => self.int_conv(id, false, &q.conv.window.clone(), q.conv.group),
            Op::QLinearMatMul(_) => self.int_matmul(id, true),
            Op::MatMulInteger(_) => self.int_matmul(id, false),
            Op::QGemm(q) => self.qgemm(id, q.alpha, q.trans_a, q.trans_b),
            Op::QLinearBinary(q) => self.qlinear_binary(id, &q.clone()),
            Op::QLinearLookup(q) => self.qlinear_lookup(id, &q.clone()),
            Op::QLinearConcat(q) => self.qlinear_concat(id, q.axis),
            Op::QLinearGlobalAveragePool(q) => self.qlinear_global_pool(id, q.channels_last),
            Op::QLinearAveragePool(q) => {
                let q = q.clone();
                self.qlinear_pool(id, &q.window, false, q.count_include_pad, q.channels_last)
            }
            Op::QLinearSoftmax(q) => self.qlinear_softmax(id, &q.clone()),
            Op::DynamicQuantizeLinear(_) => self.dynamic_quantize(id),
            Op::Einsum(e) => Err(self.unsupported(
                id,
                format!(
                    "the Einsum '{}' (the JIT runs one- and two-input forms without an ellipsis or a repeated label)",
                    e.equation
                ),
            )),
            other => Err(self.unsupported(id, format!("{} yet", other.name()))),
        }
    }
}

/// Most taps (kernel positions, resampling filter taps) a kernel unrolls: a 90x90 window. The
/// ONNX tests' largest pool window (60x80) fits; a window of millions of taps (SAME padding
/// allows any) would unroll into more code than memory holds.
const MAX_UNROLLED_TAPS: usize = 8192;

/// Kernel positions of a windowed op (a fused op's base included).
fn window_taps(op: &Op) -> Option<usize> {
    match op {
        Op::Conv(c) => Some(c.window.kernel_size()),
        Op::ConvTranspose(c) => Some(c.window.kernel_size()),
        Op::Pool(p) => Some(p.window.kernel_size()),
        Op::Fused(f) => window_taps(&f.base),
        _ => None,
    }
}
