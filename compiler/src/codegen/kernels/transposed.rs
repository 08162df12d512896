//! The output of a conv computed transposed: on small maps (ResNet50's 7x7) the GEMM runs with
//! the output positions as its rows and the output channels as its columns, so that the vector
//! lanes fill with channels (49 positions leave a quarter of two 32-wide panels empty; 512
//! channels fill sixteen). That GEMM writes `Ct[img][position][channel]`; this kernel writes it
//! out as `Y[img][channel][position]` with the conv's bias and epilogue.

use cranelift_codegen::ir::{InstBuilder, Value};

use crate::codegen::KernelSpec;
use crate::codegen::builder::{Kb, ro};
use crate::codegen::kernels::conv::{DwStep, PlaneEpilogue};
use crate::codegen::kernels::math::act_needs_helpers;

/// `Y[img][c][p] = epilogue(Ct[img][p][c] + bias[c])` for `c < channels`, `p < positions`.
/// Operands: Ct (row stride `channels`), Y, bias (if any), one per Add step (laid out like Y,
/// or one value per channel), helpers (if needed). One tile per image and quad of channels:
/// four rows of Ct at a time are transposed in registers into four output vectors.
#[derive(Clone, Debug)]
pub struct TransposedOutSpec {
    pub batch: usize,
    pub channels: usize,
    pub positions: usize,
    pub bias: bool,
    pub steps: Vec<DwStep>,
}

const Q: usize = 4;

impl TransposedOutSpec {
    pub fn needs_helpers(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, DwStep::Act(a) if act_needs_helpers(a)))
    }
    fn quads(&self) -> usize {
        self.channels.div_ceil(Q)
    }
    pub fn tiles(&self) -> usize {
        self.batch * self.quads()
    }
}

impl KernelSpec for TransposedOutSpec {
    fn name(&self) -> String {
        format!("transposed output c{} p{}", self.channels, self.positions)
    }

    fn emit(&self, kb: &mut Kb) {
        let adds = self.steps.iter().filter(|s| matches!(s, DwStep::Add { .. })).count();
        let n_ops = 2 + self.bias as usize + adds;
        let ops = kb.operands(n_ops);
        let helpers = self.needs_helpers().then(|| kb.operand(n_ops));
        let (c, p, quads) = (self.channels, self.positions, self.quads());
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (img, q) = kb.divmod(t, quads as i64);
            let c0 = kb.muli(q, Q as i64);
            // Ct's row 0 at the quad's first channel; Y's plane of that channel.
            let ct = {
                let a = kb.muli(img, (p * c) as i64);
                let o = kb.add(a, c0);
                kb.elem(ops[0], o, 4)
            };
            let plane0 = {
                let a = kb.muli(img, c as i64);
                kb.add(a, c0)
            };
            let y = kb.elem(ops[1], plane0, (p * 4) as i64);
            // The four channels' epilogues (the last quad's missing channels are never stored).
            let epis: Vec<PlaneEpilogue> = (0..Q as i64)
                .map(|j| {
                    let oc = kb.addi(c0, j);
                    let plane = kb.addi(plane0, j);
                    PlaneEpilogue::new(kb, &ops[2..], self.bias, &self.steps, oc, plane, p)
                })
                .collect();
            let scalar = |kb: &mut Kb, j: usize, pos: Value| {
                let src = kb.elem(ct, pos, (c * 4) as i64);
                let x = kb.load_f32(src, (j * 4) as i32, ro());
                let v = epis[j].apply(kb, &self.steps, x, pos, helpers);
                let dst = kb.elem(y, pos, 4);
                kb.store_f32(v, dst, (j * p * 4) as i32);
            };
            let whole = |kb: &mut Kb| {
                kb.for_const(0, (p / Q * Q) as i64, Q as i64, |kb, pos| {
                    let src = kb.elem(ct, pos, (c * 4) as i64);
                    // Rows pos..pos+4 of the quad's columns: r_i[j] = Ct[pos + i][c0 + j].
                    let rows = [0, 1, 2, 3].map(|i| kb.load_v(src, (i * c * 4) as i32, ro()));
                    let cols = kb.transpose4(rows);
                    let dst = kb.elem(y, pos, 4);
                    for (j, v) in cols.into_iter().enumerate() {
                        let v = epis[j].apply(kb, &self.steps, v, pos, helpers);
                        kb.store_v(v, dst, (j * p * 4) as i32);
                    }
                });
                for j in 0..Q {
                    kb.for_const((p / Q * Q) as i64, p as i64, 1, |kb, pos| scalar(kb, j, pos));
                }
            };
            let rem = c % Q;
            if rem == 0 {
                whole(kb);
            } else {
                // The last quad holds `rem` channels: one value at a time.
                let is_last = kb.eqi(q, quads as i64 - 1);
                let (last_b, whole_b, join) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
                kb.b.ins().brif(is_last, last_b, &[], whole_b, &[]);
                kb.b.switch_to_block(last_b);
                for j in 0..rem {
                    kb.for_const(0, p as i64, 1, |kb, pos| scalar(kb, j, pos));
                }
                kb.b.ins().jump(join, &[]);
                kb.b.switch_to_block(whole_b);
                whole(kb);
                kb.b.ins().jump(join, &[]);
                kb.b.switch_to_block(join);
            }
        });
    }
}
