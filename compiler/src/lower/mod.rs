//! Lowering: the optimised graph becomes a kernel plan: kernel specs (deduplicated), buffers
//! (arena, weights, graph inputs and outputs) and the steps that call kernels on them.
//! Reshape-like ops become views of their input's buffer; weights are packed once here into the
//! layout their kernel wants.

mod ops;
pub use ops::ARENA_OVERREAD;

use std::collections::HashMap;
use std::sync::Arc;

use incept_ir::graph::{Graph, NodeId, ValueId};
use incept_ir::{DType, Op};

use crate::Fault;
use crate::codegen::kernels::copy::CopySpec;
use crate::codegen::kernels::nd::contiguous;
use incept_runtime::buffer::AlignedBuf;

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
    /// Packed conv panels above this size are built band by band.
    band_bytes: usize,
    winograd: WinogradChoice,
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
    lower_with(g, Tier::F32x4, None, None, WinogradChoice::default())
}

/// Lowers for a kernel tier, with a deliberate miscompilation if asked (see [`Fault`]) and the
/// size above which conv panels are packed in bands (None: the default), and how Winograd tiles
/// are chosen.
pub fn lower_with(
    g: &Graph,
    tier: Tier,
    fault: Option<&Fault>,
    im2col_band_bytes: Option<usize>,
    winograd: WinogradChoice,
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
        band_bytes: im2col_band_bytes.unwrap_or(ops::IM2COL_BAND_BYTES),
        winograd,
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
        l.node(id)?;
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
    fn shape(&self, v: ValueId) -> Result<Vec<usize>, LowerError> {
        self.g.ty(v).static_dims().ok_or_else(|| LowerError::Symbolic(self.g.value(v).name.clone()))
    }

    fn buffer(&mut self, bytes: usize, place: Place, name: &str) -> BufId {
        self.out.buffers.push(Buffer { bytes, place, name: name.to_string() });
        self.out.buffers.len() - 1
    }

    /// A new arena buffer.
    fn scratch(&mut self, bytes: usize, name: &str) -> BufRef {
        BufRef { buf: self.buffer(bytes, Place::Arena, name), offset: 0 }
    }

    /// The status word, created on first use.
    fn status(&mut self) -> BufRef {
        let buf = match self.out.status {
            Some(b) => b,
            None => {
                let b = self.buffer(8, Place::Arena, "status");
                self.out.status = Some(b);
                b
            }
        };
        BufRef { buf, offset: 0 }
    }

    /// Appends `len` zero bytes to the weights, 64-byte aligned; their offset.
    fn weight_space(&mut self, len: usize) -> usize {
        let w = &mut self.out.weights;
        let offset = w.len().next_multiple_of(64);
        w.resize(offset + len);
        offset
    }

    /// Appends bytes to the weights, 64-byte aligned.
    fn weight(&mut self, bytes: &[u8], name: &str) -> BufRef {
        let offset = self.weight_space(bytes.len());
        self.out.weights.as_mut_slice()[offset..].copy_from_slice(bytes);
        let buf = self.buffer(bytes.len(), Place::Weight(offset), name);
        BufRef { buf, offset: 0 }
    }

    fn weight_f32(&mut self, values: &[f32], name: &str) -> BufRef {
        self.weight_f32_with(values.len(), name, |w| w.copy_from_slice(values))
    }

    /// `n` floats of weights (zero-initialised) that `fill` writes in place: packed weights go
    /// straight to their final place, with no intermediate copy.
    fn weight_f32_with(&mut self, n: usize, name: &str, fill: impl FnOnce(&mut [f32])) -> BufRef {
        let offset = self.weight_space(n * 4);
        let bytes = &mut self.out.weights.as_mut_slice()[offset..offset + n * 4];
        // The offset is 64-byte aligned in a 64-byte aligned buffer.
        fill(bytemuck::cast_slice_mut(bytes));
        // The plan's weights are little-endian floats.
        if cfg!(target_endian = "big") {
            for w in bytemuck::cast_slice_mut::<u8, u32>(bytes) {
                *w = w.to_le();
            }
        }
        let buf = self.buffer(n * 4, Place::Weight(offset), name);
        BufRef { buf, offset: 0 }
    }

    /// Where a value's data is: a constant goes into the weights on first use.
    fn value(&mut self, v: ValueId) -> Result<BufRef, LowerError> {
        if let Some(&r) = self.values.get(&v) {
            return Ok(r);
        }
        if let Some(r) = self.fill_constant(v)? {
            return Ok(r);
        }
        let t = self.g.const_value(v).ok_or_else(|| LowerError::Unsupported {
            node: self.g.value(v).name.clone(),
            op: "?".into(),
            what: "a value computed before it is used".into(),
        })?;
        let r = self.weight(&t.bytes().clone(), &self.g.value(v).name.clone());
        self.values.insert(v, r);
        Ok(r)
    }

    /// Concats whose inputs' slices are contiguous in the output (every dim before the axis is
    /// 1, as at batch 1): each input that a kernel computes gets its slice as its buffer, so the
    /// concat itself copies nothing. Consumers come before producers so nested concats nest.
    fn place_concat_inputs(&mut self, order: &[NodeId]) -> Result<(), LowerError> {
        for &id in order.iter().rev() {
            let node = self.g.node(id);
            let Op::Concat(c) = &node.op else { continue };
            let out = ValueId::new(id, 0);
            let s = self.shape(out)?;
            let axis = c.axis as usize;
            let elem = self.g.ty(out).dtype.size();
            let dst = match self.placed.get(&out) {
                Some(&r) => r,
                None => {
                    let bytes = s.iter().product::<usize>() * elem;
                    let r = self.scratch(bytes.max(4), &self.g.value(out).name.clone());
                    self.placed.insert(out, r);
                    r
                }
            };
            if s[..axis].iter().product::<usize>() != 1 {
                continue;
            }
            let inner: usize = s[axis + 1..].iter().product();
            let mut at = 0;
            for v in node.input_values() {
                let is = self.shape(v)?;
                let producer = &self.g.node(v.node).op;
                let computed = !matches!(
                    producer,
                    Op::Input(_)
                        | Op::Const(_)
                        | Op::Reshape(_)
                        | Op::Flatten(_)
                        | Op::Squeeze(_)
                        | Op::Unsqueeze(_)
                        | Op::Identity(_)
                        | Op::Dropout(_)
                        | Op::Cast(_)
                );
                if computed && !self.placed.contains_key(&v) && !self.g.outputs().contains(&v) {
                    self.placed.insert(v, BufRef { buf: dst.buf, offset: dst.offset + at * inner * elem });
                }
                at += is[axis];
            }
        }
        Ok(())
    }

    /// The buffer for a node's output `v`: its planned place, else a fresh arena buffer.
    fn define(&mut self, v: ValueId) -> Result<BufRef, LowerError> {
        if let Some(&r) = self.placed.get(&v) {
            self.values.insert(v, r);
            return Ok(r);
        }
        let shape = self.shape(v)?;
        let bytes = shape.iter().product::<usize>() * self.g.ty(v).dtype.size();
        let r = self.scratch(bytes.max(4), &self.g.value(v).name.clone());
        self.values.insert(v, r);
        Ok(r)
    }

    /// Registers a kernel spec (equal specs share one kernel).
    fn kernel(&mut self, spec: Arc<dyn KernelSpec>) -> usize {
        let key = format!("{spec:?}");
        if let Some(&k) = self.spec_keys.get(&key) {
            return k;
        }
        self.out.specs.push(spec);
        let k = self.out.specs.len() - 1;
        self.spec_keys.insert(key, k);
        k
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        spec: Arc<dyn KernelSpec>,
        tiles: usize,
        reads: &[BufRef],
        writes: &[BufRef],
        helpers: bool,
        node: &str,
        op: &str,
        flops: u64,
    ) {
        let kernel = self.kernel(spec);
        let mut operands: Vec<LOperand> = reads.iter().chain(writes).map(|&r| LOperand::Buf(r)).collect();
        if helpers {
            operands.push(LOperand::Helpers);
        }
        self.out.steps.push(LStep {
            kernel,
            operands,
            tiles,
            name: node.to_string(),
            op: op.to_string(),
            flops,
            reads: reads.iter().map(|r| r.buf).collect(),
            writes: writes.iter().map(|r| r.buf).collect(),
            in_place: vec![],
            check: None,
        });
    }

    /// Marks the last step as able to write `written` over `read` (see [`LStep::in_place`]); both
    /// must start at offset 0 of equally sized buffers.
    fn allow_in_place(&mut self, read: BufRef, written: BufRef) {
        let same = read.offset == 0
            && written.offset == 0
            && read.buf != written.buf
            && self.out.buffers[read.buf].bytes == self.out.buffers[written.buf].bytes;
        if let (true, Some(step)) = (same, self.out.steps.last_mut()) {
            step.in_place.push((read.buf, written.buf));
        }
    }

    /// Every graph output ends in its own output slot: a buffer produced here is retargeted there,
    /// anything else (an input, a constant, a view at an offset, a repeated output) is copied.
    fn outputs(&mut self) -> Result<(), LowerError> {
        for (k, &v) in self.g.outputs().iter().enumerate() {
            let shape = self.shape(v)?;
            let dtype = self.g.ty(v).dtype;
            let bytes = shape.iter().product::<usize>() * dtype.size();
            let src = self.value(v)?;
            let b = &mut self.out.buffers[src.buf];
            let buf = if bytes == 0 {
                self.buffer(0, Place::Output(k), &self.g.value(v).name.clone())
            } else if b.place == Place::Arena && src.offset == 0 && b.bytes == bytes.max(4) {
                b.place = Place::Output(k);
                b.bytes = bytes;
                src.buf
            } else {
                let dst = self.buffer(bytes, Place::Output(k), &self.g.value(v).name.clone());
                let n = shape.iter().product::<usize>();
                let spec = CopySpec::new(&[n], vec![1], vec![1], 0, 0, dtype.size());
                let tiles = spec.tiles();
                self.step(Arc::new(spec), tiles, &[src], &[BufRef { buf: dst, offset: 0 }], false, "output", "Copy", 0);
                dst
            };
            self.out.outputs.push(Io { name: self.g.value(v).name.clone(), dtype, shape, buf });
        }
        Ok(())
    }

    /// Copies `src` (read with `in_strides` over `dims`) into a new buffer for `v`.
    #[allow(clippy::too_many_arguments)]
    fn strided_copy(
        &mut self,
        v: ValueId,
        src: BufRef,
        dims: &[usize],
        in_strides: Vec<isize>,
        in_offset: isize,
        node: &str,
        op: &str,
    ) -> Result<(), LowerError> {
        let elem = self.g.ty(v).dtype.size();
        let dst = self.define(v)?;
        let spec = CopySpec::new(dims, in_strides, contiguous(dims), in_offset, 0, elem);
        let tiles = spec.tiles();
        self.step(Arc::new(spec), tiles, &[src], &[dst], false, node, op, 0);
        Ok(())
    }
}
