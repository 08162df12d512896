//! Gather with indices known only at run time.

use cranelift_codegen::ir::InstBuilder;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I8, I16, I32, I64};

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
            // Negative indices count from the end.
            let axis = kb.iconst(self.axis as i64);
            let shifted = kb.b.ins().iadd(raw, axis);
            let zero = kb.iconst(0);
            let neg = kb.b.ins().icmp(IntCC::SignedLessThan, raw, zero);
            let j = kb.b.ins().select(neg, shifted, raw);
            let bad = {
                let lo = kb.b.ins().icmp(IntCC::SignedLessThan, j, zero);
                let hi = kb.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, j, axis);
                kb.b.ins().bor(lo, hi)
            };
            kb.if_then(bad, |kb| {
                let one = kb.iconst(1);
                kb.b.ins().store(rw(), one, status, 0);
            });
            let j = {
                let a = kb.b.ins().smax(j, zero);
                kb.mini(a, self.axis as i64 - 1)
            };
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
            // The row's bytes: 16 at a time in a loop, then the rest in decreasing sizes.
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
        });
    }
}
