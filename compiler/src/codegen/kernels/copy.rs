//! Strided copies of any element type: Transpose, Slice, Expand, Concat and Split pieces,
//! DepthToSpace/SpaceToDepth, and copies into graph outputs.

use cranelift_codegen::ir::{InstBuilder, Type, Value, types};

use crate::codegen::KernelSpec;
use crate::codegen::builder::{Kb, ro, rw};
use crate::codegen::kernels::nd::{collapse, emit_offsets};

const CHUNK: usize = 4096;

/// `out[out_offset + sum(i_j * out_strides_j)] = in[in_offset + sum(i_j * in_strides_j)]` over
/// `dims`, in elements of `elem` bytes. Operands: input, output.
#[derive(Debug)]
pub struct CopySpec {
    pub dims: Vec<usize>,
    pub in_strides: Vec<isize>,
    pub out_strides: Vec<isize>,
    pub in_offset: isize,
    pub out_offset: isize,
    pub elem: usize,
}

impl CopySpec {
    pub fn new(
        dims: &[usize],
        in_strides: Vec<isize>,
        out_strides: Vec<isize>,
        in_offset: isize,
        out_offset: isize,
        elem: usize,
    ) -> CopySpec {
        let (d, s) = collapse(dims, &[in_strides, out_strides]);
        CopySpec { dims: d, in_strides: s[0].clone(), out_strides: s[1].clone(), in_offset, out_offset, elem }
    }

    fn cols(&self) -> usize {
        *self.dims.last().unwrap_or(&1)
    }

    pub fn tiles(&self) -> usize {
        self.dims[..self.dims.len() - 1].iter().product::<usize>() * self.cols().div_ceil(CHUNK).max(1)
    }

    fn ty(&self) -> Type {
        match self.elem {
            1 => types::I8,
            2 => types::I16,
            4 => types::I32,
            _ => types::I64,
        }
    }
}

impl KernelSpec for CopySpec {
    fn name(&self) -> String {
        format!("copy {:?}", self.dims)
    }

    fn emit(&self, kb: &mut Kb) {
        let ops = kb.operands(2);
        let cols = self.cols();
        let chunks = cols.div_ceil(CHUNK).max(1);
        let outer = &self.dims[..self.dims.len() - 1];
        let k = self.dims.len() - 1;
        let (si, so) = (self.in_strides[k], self.out_strides[k]);
        let elem = self.elem as i64;
        let ty = self.ty();
        let vector = self.elem == 4 && si == 1 && so == 1;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (row, chunk) = kb.divmod(t, chunks as i64);
            let refs = [&self.in_strides[..k], &self.out_strides[..k]];
            let offs = emit_offsets(kb, row, outer, &refs, &[self.in_offset, self.out_offset]);
            let pin = kb.elem(ops[0], offs[0], elem);
            let pout = kb.elem(ops[1], offs[1], elem);
            let c0 = kb.muli(chunk, CHUNK as i64);
            let c_end = kb.addi(c0, CHUNK as i64);
            let cols_v = kb.iconst(cols as i64);
            let c1 = kb.b.ins().smin(c_end, cols_v);
            let scalar = |kb: &mut Kb, c: Value| {
                let a = kb.muli(c, si as i64);
                let p = kb.elem(pin, a, elem);
                let v = kb.b.ins().load(ty, ro(), p, 0);
                let b = kb.muli(c, so as i64);
                let q = kb.elem(pout, b, elem);
                kb.b.ins().store(rw(), v, q, 0);
            };
            if vector {
                let hi = kb.addi(c1, -3);
                kb.for_range(c0, hi, 4, |kb, c| {
                    let p = kb.elem(pin, c, 4);
                    let v = kb.b.ins().load(types::I32X4, ro(), p, 0);
                    let q = kb.elem(pout, c, 4);
                    kb.b.ins().store(rw(), v, q, 0);
                });
                let len = kb.b.ins().isub(c1, c0);
                let mask = kb.iconst(!3);
                let full = kb.b.ins().band(len, mask);
                let tail = kb.b.ins().iadd(c0, full);
                kb.for_range(tail, c1, 1, scalar);
            } else {
                kb.for_range(c0, c1, 1, scalar);
            }
        });
    }
}
