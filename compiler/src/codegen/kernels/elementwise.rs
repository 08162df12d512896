//! Elementwise kernels: an expression over broadcast f32 inputs, vectorised along the innermost
//! dim (f32x4) with a scalar tail, tiled over rows and column chunks.

use cranelift_codegen::ir::{InstBuilder, Value};

use crate::codegen::KernelSpec;
use crate::codegen::builder::{Kb, ro};
use crate::codegen::kernels::math::{KExpr, emit_expr, expr_needs_helpers};
use crate::codegen::kernels::nd::{broadcast_strides, collapse, contiguous, emit_offsets};
use crate::codegen::wide_expr::WideExprKernel;

/// Columns per tile, so that long rows still spread over threads.
const CHUNK: usize = 4096;

/// `out = expr(inputs...)` with numpy broadcasting. Operands: the inputs, the output, then the
/// helper table when the expression needs it, then the AVX-512 row kernel where `wide`.
#[derive(Debug)]
pub struct ElementwiseSpec {
    /// Collapsed output dims.
    pub dims: Vec<usize>,
    /// Per input, element strides over `dims` (0 where broadcast).
    pub strides: Vec<Vec<isize>>,
    pub expr: KExpr,
    /// Rows run [`WideExprKernel`] (16 lanes) instead of the CLIF loop (4 lanes and a scalar
    /// tail); see [`ElementwiseSpec::wide_kernel`].
    pub wide: bool,
}

impl ElementwiseSpec {
    pub fn new(out: &[usize], inputs: &[Vec<usize>], expr: KExpr) -> ElementwiseSpec {
        let mut all: Vec<Vec<isize>> = inputs.iter().map(|s| broadcast_strides(s, out)).collect();
        all.push(contiguous(out));
        let (dims, mut strides) = collapse(out, &all);
        strides.pop();
        ElementwiseSpec { dims, strides, expr, wide: false }
    }

    /// The AVX-512 row kernel, where it computes this expression: every input contiguous or
    /// one scalar along a row.
    pub fn wide_kernel(&self) -> Option<WideExprKernel> {
        let last: Vec<isize> = self.strides.iter().map(|s| s[s.len() - 1]).collect();
        let rows_ok = last.iter().all(|&s| s == 0 || s == 1);
        let k = WideExprKernel { expr: self.expr.clone(), bcast: last.iter().map(|&s| s == 0).collect() };
        (rows_ok && WideExprKernel::supports(&self.expr, last.len()) && k.fits()).then_some(k)
    }

    pub fn needs_helpers(&self) -> bool {
        expr_needs_helpers(&self.expr)
    }

    fn cols(&self) -> usize {
        *self.dims.last().unwrap_or(&1)
    }

    fn chunks(&self) -> usize {
        self.cols().div_ceil(CHUNK).max(1)
    }

    pub fn tiles(&self) -> usize {
        self.dims[..self.dims.len() - 1].iter().product::<usize>() * self.chunks()
    }
}

impl KernelSpec for ElementwiseSpec {
    fn name(&self) -> String {
        format!("elementwise {:?} x{}", self.dims, self.strides.len())
    }

    fn emit(&self, kb: &mut Kb) {
        let n = self.strides.len();
        let ops = kb.operands(n + 1);
        let helpers = self.needs_helpers().then(|| kb.operand(n + 1));
        let (cols, chunks) = (self.cols(), self.chunks());
        let outer = &self.dims[..self.dims.len() - 1];
        let mut all: Vec<Vec<isize>> = self.strides.iter().map(|s| s[..s.len() - 1].to_vec()).collect();
        all.push(contiguous(&self.dims)[..self.dims.len() - 1].to_vec());
        let last: Vec<isize> = self.strides.iter().map(|s| s[s.len() - 1]).collect();
        let vector = last.iter().all(|&s| s == 0 || s == 1);
        let wide = self.wide.then(|| kb.operand(n + 1 + helpers.is_some() as usize));
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (row, chunk) = kb.divmod(t, chunks as i64);
            let refs: Vec<&[isize]> = all.iter().map(|v| v.as_slice()).collect();
            let offs = emit_offsets(kb, row, outer, &refs, &vec![0; n + 1]);
            // Row base pointers.
            let bases: Vec<Value> = (0..=n).map(|k| kb.elem(ops[k], offs[k], 4)).collect();
            let c0 = kb.muli(chunk, CHUNK as i64);
            let c_end = kb.addi(c0, CHUNK as i64);
            let cols_v = kb.iconst(cols as i64);
            let c1 = kb.b.ins().smin(c_end, cols_v);
            let scalar_leaf = |kb: &mut Kb, k: usize, c: Value| -> Value {
                let idx = kb.muli(c, last[k] as i64);
                let p = kb.elem(bases[k], idx, 4);
                kb.load_f32(p, 0, ro())
            };
            if let Some(f) = wide {
                // The row's chunk in machine code: output, count, then each input at the
                // chunk's first column (a broadcast one at its scalar).
                let out = kb.elem(bases[n], c0, 4);
                let count = kb.b.ins().isub(c1, c0);
                let mut args = vec![out, count];
                for k in 0..n {
                    args.push(if last[k] == 0 { bases[k] } else { kb.elem(bases[k], c0, 4) });
                }
                while args.len() < 6 {
                    args.push(out);
                }
                kb.call_code(f, &args);
            } else if vector {
                // Broadcast scalars are loaded once per tile.
                let splats: Vec<Option<Value>> = (0..n)
                    .map(|k| {
                        (last[k] == 0).then(|| {
                            let s = kb.load_f32(bases[k], 0, ro());
                            kb.splat(s)
                        })
                    })
                    .collect();
                let hi = kb.addi(c1, -3);
                kb.for_range(c0, hi, 4, |kb, c| {
                    let leaves: Vec<Value> = (0..n)
                        .map(|k| match splats[k] {
                            Some(s) => s,
                            None => {
                                let p = kb.elem(bases[k], c, 4);
                                kb.load_v(p, 0, ro())
                            }
                        })
                        .collect();
                    let like = kb.vconst(0.0);
                    let r = emit_expr(kb, &self.expr, &leaves, like, helpers);
                    let p = kb.elem(bases[n], c, 4);
                    kb.store_v(r, p, 0);
                });
                // Scalar tail from the first column the vector loop did not reach.
                let len = kb.b.ins().isub(c1, c0);
                let mask = kb.iconst(!3);
                let full = kb.b.ins().band(len, mask);
                let tail = kb.b.ins().iadd(c0, full);
                kb.for_range(tail, c1, 1, |kb, c| {
                    let leaves: Vec<Value> = (0..n).map(|k| scalar_leaf(kb, k, c)).collect();
                    let like = kb.fconst(0.0);
                    let r = emit_expr(kb, &self.expr, &leaves, like, helpers);
                    let p = kb.elem(bases[n], c, 4);
                    kb.store_f32(r, p, 0);
                });
            } else {
                kb.for_range(c0, c1, 1, |kb, c| {
                    let leaves: Vec<Value> = (0..n).map(|k| scalar_leaf(kb, k, c)).collect();
                    let like = kb.fconst(0.0);
                    let r = emit_expr(kb, &self.expr, &leaves, like, helpers);
                    let p = kb.elem(bases[n], c, 4);
                    kb.store_f32(r, p, 0);
                });
            }
        });
    }
}
