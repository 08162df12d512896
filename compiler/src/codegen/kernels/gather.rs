//! Gather, GatherND and ScatterND with indices known only at run time.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I8, I16, I32, I64};
use cranelift_codegen::ir::{InstBuilder, Value};

use crate::codegen::KernelSpec;
use crate::codegen::builder::{Kb, ro, rw};

/// `out[o, i, :] = data[o, idx[i], :]` over data viewed as `[outer, axis, inner]` with elements of
/// `elem` bytes. Negative indices count from the end; an index outside `[-axis, axis)` sets the
/// status word (the run then fails naming the node) and is clamped so the copy stays in bounds.
/// Operands: DATA, INDICES (i32 or i64), OUT, STATUS. One tile per output row (o, i).
#[derive(Clone, Debug)]
pub struct GatherSpec {
    pub outer: usize,
    pub axis: usize,
    pub inner: usize,
    pub count: usize,
    pub elem: usize,
    pub index_bytes: usize,
}

impl GatherSpec {
    pub fn tiles(&self) -> usize {
        self.outer * self.count
    }
}

impl KernelSpec for GatherSpec {
    fn name(&self) -> String {
        format!("gather {}x{} of {}", self.count, self.inner, self.axis)
    }

    fn emit(&self, kb: &mut Kb) {
        let [data, idx, out, status] = [kb.operand(0), kb.operand(1), kb.operand(2), kb.operand(3)];
        let row = (self.inner * self.elem) as i64;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (o, i) = kb.divmod(t, self.count as i64);
            let ip = kb.elem(idx, i, self.index_bytes as i64);
            let raw =
                if self.index_bytes == 8 { kb.b.ins().load(I64, ro(), ip, 0) } else { kb.b.ins().sload32(ro(), ip, 0) };
            let j = checked_index(kb, raw, self.axis, status);
            let src = {
                let a = kb.muli(o, self.axis as i64);
                let r = kb.add(a, j);
                let b = kb.muli(r, row);
                kb.add(data, b)
            };
            let dst = {
                let b = kb.muli(t, row);
                kb.add(out, b)
            };
            copy_bytes(kb, src, dst, row);
        });
    }
}

/// An index into a dim of size `n`: a negative one counts from the end; one outside `[-n, n)`
/// sets the status word and is clamped into the dim, so that the copy stays in bounds.
fn checked_index(kb: &mut Kb, raw: Value, n: usize, status: Value) -> Value {
    let nv = kb.iconst(n as i64);
    let zero = kb.iconst(0);
    let shifted = kb.b.ins().iadd(raw, nv);
    let neg = kb.b.ins().icmp(IntCC::SignedLessThan, raw, zero);
    let j = kb.b.ins().select(neg, shifted, raw);
    let bad = {
        let lo = kb.b.ins().icmp(IntCC::SignedLessThan, j, zero);
        let hi = kb.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, j, nv);
        kb.b.ins().bor(lo, hi)
    };
    kb.if_then(bad, |kb| {
        let one = kb.iconst(1);
        kb.b.ins().store(rw(), one, status, 0);
    });
    let a = kb.b.ins().smax(j, zero);
    kb.mini(a, n as i64 - 1)
}

/// Copies `row` bytes from `src` to `dst`: 16 at a time in a loop, then the rest in decreasing
/// sizes.
fn copy_bytes(kb: &mut Kb, src: Value, dst: Value, row: i64) {
    let vend = row / 16 * 16;
    if vend > 0 {
        kb.for_const(0, vend, 16, |kb, off| {
            let s = kb.add(src, off);
            let d = kb.add(dst, off);
            let v = kb.load_v(s, 0, ro());
            kb.store_v(v, d, 0);
        });
    }
    let mut at = vend;
    for (size, ty) in [(8, I64), (4, I32), (2, I16), (1, I8)] {
        while row - at >= size {
            let v = kb.b.ins().load(ty, ro(), src, at as i32);
            kb.b.ins().store(rw(), v, dst, at as i32);
            at += size;
        }
    }
}

/// How a ScatterND update meets the element it lands on (f32 only for the reductions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScatterMode {
    Replace,
    Add,
    Mul,
    Max,
    Min,
}

/// GatherND / ScatterND with index tuples read at run time: tuple t holds `dims.len()` i64
/// coordinates into the leading dims of the data (negative ones count from the end) and names a
/// slice of `inner` elements of `elem` bytes. Gather: `out[t] = data[slice]`, one tile per
/// tuple. Scatter (`scatter` set): `out[slice] = updates[t]` (or combined with the reduction),
/// with OUT already holding a copy of the data; one tile for all tuples, so that they apply in
/// order (a repeated index keeps the last update, as in the reference). An out-of-range
/// coordinate sets the status word and is clamped. Operands: DATA (gather) or UPDATES (scatter),
/// INDICES, OUT, STATUS.
#[derive(Clone, Debug)]
pub struct IndexNdSpec {
    pub dims: Vec<usize>,
    pub inner: usize,
    pub tuples: usize,
    pub elem: usize,
    pub scatter: Option<ScatterMode>,
}

impl IndexNdSpec {
    pub fn tiles(&self) -> usize {
        if self.scatter.is_some() { 1 } else { self.tuples }
    }
}

impl KernelSpec for IndexNdSpec {
    fn name(&self) -> String {
        let what = match self.scatter {
            None => "gathernd".to_string(),
            Some(m) => format!("scatternd {m:?}").to_lowercase(),
        };
        format!("{what} {}x{}", self.tuples, self.inner)
    }

    fn emit(&self, kb: &mut Kb) {
        let [src, idx, out, status] = [kb.operand(0), kb.operand(1), kb.operand(2), kb.operand(3)];
        let k = self.dims.len() as i64;
        let row = (self.inner * self.elem) as i64;
        let (begin, end) =
            if self.scatter.is_some() { (kb.iconst(0), kb.iconst(self.tuples as i64)) } else { (kb.begin, kb.end) };
        kb.for_range(begin, end, 1, |kb, t| {
            // The slice's element offset: the coordinates in row-major order over `dims`.
            let mut flat = kb.iconst(0);
            for (d, &n) in self.dims.iter().enumerate() {
                let at = {
                    let a = kb.muli(t, k);
                    kb.addi(a, d as i64)
                };
                let ip = kb.elem(idx, at, 8);
                let raw = kb.b.ins().load(I64, ro(), ip, 0);
                let j = checked_index(kb, raw, n, status);
                let scaled = kb.muli(flat, n as i64);
                flat = kb.add(scaled, j);
            }
            let slice = {
                let b = kb.muli(flat, row);
                kb.add(if self.scatter.is_some() { out } else { src }, b)
            };
            let own = {
                let b = kb.muli(t, row);
                kb.add(if self.scatter.is_some() { src } else { out }, b)
            };
            match self.scatter {
                None => copy_bytes(kb, slice, own, row),
                Some(ScatterMode::Replace) => copy_bytes(kb, own, slice, row),
                Some(mode) => {
                    kb.for_const(0, self.inner as i64, 1, |kb, i| {
                        let (pu, po) = (kb.elem(own, i, 4), kb.elem(slice, i, 4));
                        let (u, o) = (kb.load_f32(pu, 0, ro()), kb.load_f32(po, 0, rw()));
                        let r = match mode {
                            ScatterMode::Add => kb.b.ins().fadd(o, u),
                            ScatterMode::Mul => kb.b.ins().fmul(o, u),
                            ScatterMode::Max => kb.b.ins().fmax(o, u),
                            _ => kb.b.ins().fmin(o, u),
                        };
                        kb.store_f32(r, po, 0);
                    });
                }
            }
        });
    }
}

/// GatherElements: `out[p] = data[p with p[axis] = idx[p]]` over the positions p of the indices
/// (shape `idx_dims`, each dim at most data's except along `axis`), elements of `elem` bytes.
/// Negative indices count from the end; an out-of-range one sets the status word and is clamped.
/// Operands: DATA, INDICES (i32 or i64), OUT, STATUS. One tile per row of the indices' last dim.
#[derive(Clone, Debug)]
pub struct GatherElementsSpec {
    pub data_dims: Vec<usize>,
    pub idx_dims: Vec<usize>,
    pub axis: usize,
    pub elem: usize,
    pub index_bytes: usize,
}

impl GatherElementsSpec {
    pub fn tiles(&self) -> usize {
        self.idx_dims[..self.idx_dims.len() - 1].iter().product()
    }
}

impl KernelSpec for GatherElementsSpec {
    fn name(&self) -> String {
        format!("gatherelements {:?} axis {}", self.idx_dims, self.axis)
    }

    fn emit(&self, kb: &mut Kb) {
        let [data, idx, out, status] = [kb.operand(0), kb.operand(1), kb.operand(2), kb.operand(3)];
        let rank = self.idx_dims.len();
        let last = rank - 1;
        let cols = self.idx_dims[last] as i64;
        let dstr = incept_ir::ops::strides_of(&self.data_dims);
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            // The data offset of the row's leading coordinates, without the axis's term.
            let mut base = kb.iconst(0);
            let mut rest = t;
            for d in (0..last).rev() {
                let (q, r) = kb.divmod(rest, self.idx_dims[d] as i64);
                rest = q;
                if d != self.axis {
                    let term = kb.muli(r, dstr[d] as i64);
                    base = kb.add(base, term);
                }
            }
            kb.for_const(0, cols, 1, |kb, c| {
                let p = {
                    let a = kb.muli(t, cols);
                    kb.add(a, c)
                };
                let ip = kb.elem(idx, p, self.index_bytes as i64);
                let raw = if self.index_bytes == 8 {
                    kb.b.ins().load(I64, ro(), ip, 0)
                } else {
                    kb.b.ins().sload32(ro(), ip, 0)
                };
                let j = checked_index(kb, raw, self.data_dims[self.axis], status);
                let mut off = kb.muli(j, dstr[self.axis] as i64);
                off = kb.add(base, off);
                if last != self.axis {
                    let col = kb.muli(c, dstr[last] as i64);
                    off = kb.add(off, col);
                }
                let src = kb.elem(data, off, self.elem as i64);
                let dst = kb.elem(out, p, self.elem as i64);
                copy_bytes(kb, src, dst, self.elem as i64);
            });
        });
    }
}
