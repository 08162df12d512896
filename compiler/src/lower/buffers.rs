//! What every family's lowering builds with: buffers (arena scratch, weights, values), kernel
//! specs (equal ones shared) and the steps that call them.

use std::sync::Arc;

use incept_ir::graph::ValueId;
use incept_ir::ops::Op;

use super::{BufId, BufRef, Buffer, Io, LOperand, LStep, LowerError, Lowerer, Place};
use crate::codegen::KernelSpec;
use crate::codegen::kernels::copy::CopySpec;

impl<'g> Lowerer<'g> {
    pub(super) fn buffer(&mut self, bytes: usize, place: Place, name: &str) -> BufId {
        self.out.buffers.push(Buffer { bytes, place, name: name.to_string() });
        self.out.buffers.len() - 1
    }

    /// A new arena buffer.
    pub(super) fn scratch(&mut self, bytes: usize, name: &str) -> BufRef {
        BufRef { buf: self.buffer(bytes, Place::Arena, name), offset: 0 }
    }

    /// The status word, created on first use.
    pub(super) fn status(&mut self) -> BufRef {
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
    pub(super) fn weight(&mut self, bytes: &[u8], name: &str) -> BufRef {
        let offset = self.weight_space(bytes.len());
        self.out.weights.as_mut_slice()[offset..].copy_from_slice(bytes);
        let buf = self.buffer(bytes.len(), Place::Weight(offset), name);
        BufRef { buf, offset: 0 }
    }

    pub(super) fn weight_f32(&mut self, values: &[f32], name: &str) -> BufRef {
        self.weight_f32_with(values.len(), name, |w| w.copy_from_slice(values))
    }

    /// `n` floats of weights (zero-initialised) that `fill` writes in place: packed weights go
    /// straight to their final place, with no intermediate copy.
    pub(super) fn weight_f32_with(&mut self, n: usize, name: &str, fill: impl FnOnce(&mut [f32])) -> BufRef {
        self.weight_with(n, name, fill)
    }

    /// `n` little-endian u16 (bf16 weights) in the weights, written by `fill`.
    pub(super) fn weight_u16_with(&mut self, n: usize, name: &str, fill: impl FnOnce(&mut [u16])) -> BufRef {
        self.weight_with(n, name, fill)
    }

    /// `n` little-endian values of a plain type in the weights, written by `fill`.
    fn weight_with<T: bytemuck::Pod + Swap>(&mut self, n: usize, name: &str, fill: impl FnOnce(&mut [T])) -> BufRef {
        let size = n * std::mem::size_of::<T>();
        let offset = self.weight_space(size);
        let bytes = &mut self.out.weights.as_mut_slice()[offset..offset + size];
        // The offset is 64-byte aligned in a 64-byte aligned buffer.
        let values: &mut [T] = bytemuck::cast_slice_mut(bytes);
        fill(values);
        // The plan's weights are little-endian.
        if cfg!(target_endian = "big") {
            values.iter_mut().for_each(|v| *v = v.to_le());
        }
        let buf = self.buffer(size, Place::Weight(offset), name);
        BufRef { buf, offset: 0 }
    }

    /// Where a value's data is: a constant goes into the weights on first use.
    pub(super) fn value(&mut self, v: ValueId) -> Result<BufRef, LowerError> {
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

    /// A ConstantOfShape read as an activation: a fill kernel writes it (once, where it is first
    /// read), instead of its whole value going into the weights. `None` for other values.
    pub(super) fn fill_constant(&mut self, v: ValueId) -> Result<Option<BufRef>, LowerError> {
        let Op::ConstantOfShape(c) = &self.g.node(v.node).op else { return Ok(None) };
        let name = self.g.node(v.node).name.clone();
        let elem = c.value.dtype().size();
        let one = self.weight(&c.value.bytes().clone(), &format!("{name}.value"));
        let n: usize = self.shape(v)?.iter().product();
        let dst = self.define(v)?;
        if n > 0 {
            let spec = CopySpec::new(&[n], vec![0], vec![1], 0, 0, elem);
            let tiles = spec.tiles();
            self.step(Arc::new(spec), tiles, &[one], &[dst], false, &name, "ConstantOfShape", 0);
        }
        Ok(Some(dst))
    }

    /// The buffer for a node's output `v`: its planned place, else a fresh arena buffer.
    pub(super) fn define(&mut self, v: ValueId) -> Result<BufRef, LowerError> {
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
    pub(super) fn kernel(&mut self, spec: Arc<dyn KernelSpec>) -> usize {
        let key = format!("{spec:?}");
        if let Some(&k) = self.spec_keys.get(&key) {
            return k;
        }
        self.out.specs.push(spec);
        let k = self.out.specs.len() - 1;
        self.spec_keys.insert(key, k);
        k
    }

    /// A step that reads `reads` and writes `writes`, its operands in that order.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn step(
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
        let operands: Vec<BufRef> = reads.iter().chain(writes).copied().collect();
        let written: Vec<bool> = (0..operands.len()).map(|i| i >= reads.len()).collect();
        let (reads, writes) = (reads.iter().map(|r| r.buf).collect(), writes.iter().map(|r| r.buf).collect());
        self.push_step(spec, tiles, &operands, written, reads, writes, helpers, node, op, flops);
    }

    /// A step whose operand `out_index` is the one it writes (the others it reads).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn step_ordered(
        &mut self,
        spec: Arc<dyn KernelSpec>,
        tiles: usize,
        ops: &[BufRef],
        out_index: usize,
        helpers: bool,
        node: &str,
        op: &str,
        flops: u64,
    ) {
        let reads = ops.iter().enumerate().filter(|(i, _)| *i != out_index).map(|(_, r)| r.buf).collect();
        let written: Vec<bool> = (0..ops.len()).map(|i| i == out_index).collect();
        self.push_step(spec, tiles, ops, written, reads, vec![ops[out_index].buf], helpers, node, op, flops);
    }

    /// Appends a call of `spec`'s kernel on `operands` (then the helper table if `helpers`), of
    /// which it writes those `written` marks.
    #[allow(clippy::too_many_arguments)]
    fn push_step(
        &mut self,
        spec: Arc<dyn KernelSpec>,
        tiles: usize,
        operands: &[BufRef],
        written: Vec<bool>,
        reads: Vec<BufId>,
        writes: Vec<BufId>,
        helpers: bool,
        node: &str,
        op: &str,
        flops: u64,
    ) {
        let kernel = self.kernel(spec);
        let mut operands: Vec<LOperand> = operands.iter().map(|&r| LOperand::Buf(r)).collect();
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
            reads,
            writes,
            written,
            in_place: vec![],
            check: None,
        });
    }

    /// Marks the last step as able to write `written` over `read` (see [`LStep::in_place`]); both
    /// must start at offset 0 of equally sized buffers.
    pub(super) fn allow_in_place(&mut self, read: BufRef, written: BufRef) {
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
    pub(super) fn outputs(&mut self) -> Result<(), LowerError> {
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
}

/// Values whose bytes a big-endian host swaps to little-endian.
trait Swap {
    fn to_le(self) -> Self;
}

impl Swap for f32 {
    fn to_le(self) -> f32 {
        f32::from_bits(self.to_bits().to_le())
    }
}

impl Swap for u16 {
    fn to_le(self) -> u16 {
        u16::to_le(self)
    }
}
