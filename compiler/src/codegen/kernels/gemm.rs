//! Matrix multiply with a fused epilogue: `C = alpha * A B + bias`, then adds and activations.
//! Used by Gemm, MatMul and, on packed im2col panels, by convolution.
//!
//! A is read as MR-row panels and B as NR(=4)-column panels through strides, so the same kernel
//! serves weights packed at compile time (`[panel][k][MR]`, `[panel][k][NR]`) and activations laid
//! out row-major. The innermost register tile is emitted by [`Microkernel`]: MR f32x4 accumulators,
//! one B vector and a broadcast of A per row (see KERNEL-NOTES.md for why this shape).

use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::Variable;
use incept_ir::ops::Activation;

use crate::codegen::bf16::{AmxMicrokernel, AmxTiles, Bf16Tier, PairPack};
use crate::codegen::builder::{F32X4, I64, Kb, ro, rw};
use crate::codegen::kernels::math::{act_needs_helpers, emit_act};
use crate::codegen::{KernelSpec, Tier};

/// Columns of a B panel and of the register tile (one f32x4).
pub const NR: usize = 4;

/// How a 2-D operand is addressed (in elements): element (r, c) of batch b is at
/// `(b mod batch_mod) * batch_stride + (r / panel_rows) * panel_stride + (r % panel_rows) * rs + c * cs`
/// (for A the rows are m and the columns k; for B the rows are k and the columns n, with
/// panels over n instead: see [`Mat::b_index`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mat {
    pub rs: isize,
    pub cs: isize,
    pub panel_stride: isize,
    pub batch_stride: isize,
    /// 0: no modulo.
    pub batch_mod: usize,
}

impl Mat {
    /// A row-major [rows, cols] matrix (panels are just groups of rows).
    pub fn row_major(cols: usize, batch_stride: usize) -> Mat {
        Mat { rs: cols as isize, cs: 1, panel_stride: 0, batch_stride: batch_stride as isize, batch_mod: 0 }
    }
}

/// One epilogue step: add operand `i` (laid out over (m, n) by a [`Mat`]) or an activation.
#[derive(Clone, Debug, PartialEq)]
pub enum GemmStep {
    Add(Mat),
    Act(Activation),
}

/// `C[m, n] = alpha * sum_k A[m, k] B[k, n] (+ bias) (epilogue)`, `batch` independent problems.
/// Operands: A, B, C, bias (if any), one per `Add` step, then the helper table when needed.
#[derive(Clone, Debug)]
pub struct GemmSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    /// A(m, k): rows are m; `panel_stride` jumps MR rows.
    pub a: Mat,
    /// B(k, n): `rs` steps k, `cs` must be 1 within an NR-wide panel, `panel_stride` jumps NR columns.
    pub b: Mat,
    /// C(m, n), row-major within a batch.
    pub c: Mat,
    pub alpha: f32,
    pub bias: Option<Mat>,
    pub steps: Vec<GemmStep>,
    /// Rows of the register tile (<= 12).
    pub mr: usize,
    /// K block kept in L1.
    pub kc: usize,
    /// Panels per tile along m and n.
    pub m_panels: usize,
    pub n_panels: usize,
    /// The register tile's instruction set. The AVX2 tier calls a microkernel (operands after
    /// the helper table: the `mr`-row one, then the one for the last `m % mr` rows if any) and
    /// applies the epilogue here.
    pub tier: Tier,
    /// bf16 operands (the AVX-512 tier only): A packed in the bf16 tier's layout, B converted
    /// to pairs per panel and K block by a `PairPack` (operands after the microkernels: the
    /// full-width one, then the half-width one when the last panel takes the narrow kernel);
    /// sums and epilogue in f32. See `codegen/bf16.rs`.
    pub bf16: Option<Bf16Tier>,
    /// bf16 with B already in pair panels (constant, packed at compile time: `rs` is the pair
    /// row's half, NR / 2 units per k): no `PairPack`.
    pub b_pairs: bool,
    /// bf16 with B read straight from padded planes of channel pairs (an implicit conv, see
    /// [`Taps`]): `b_pairs` too; B's `panel_stride` steps NR columns and `batch_stride` a row.
    pub b_taps: Option<Taps>,
}

/// How an implicit conv's B is addressed: K runs over taps, then channels (padded to even), in
/// one K block (`kc` = K): its microkernels loop over the taps themselves (`wide::TapLoop`). Pair row (tap (ky, kx), channels 2p and 2p + 1) of output
/// column c is at `p * plane_bytes + ky * row_bytes + (kx + c) * 4` from the problem's B.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Taps {
    pub cpad: usize,
    pub kw: usize,
    pub row_bytes: i64,
    pub plane_bytes: i64,
}

impl GemmSpec {
    /// The blocking fields, with every other field empty: to complete with `..` in a literal.
    pub fn blocked(kc: usize, m_panels: usize, n_panels: usize) -> GemmSpec {
        let empty = Mat::row_major(0, 0);
        GemmSpec {
            m: 0,
            n: 0,
            k: 0,
            batch: 1,
            a: empty,
            b: empty,
            c: empty,
            alpha: 1.0,
            bias: None,
            steps: vec![],
            mr: 1,
            kc,
            m_panels,
            n_panels,
            tier: Tier::F32x4,
            bf16: None,
            b_pairs: false,
            b_taps: None,
        }
    }

    fn pm(&self) -> usize {
        self.m.div_ceil(self.mr)
    }
    fn pn(&self) -> usize {
        self.n.div_ceil(self.tier.nr())
    }
    /// The (rows, columns) of the microkernels an AVX2 GEMM calls, in operand order: whole
    /// panels; the last row panel's rows; an 8-column kernel for a last column panel of 8 or
    /// fewer columns (16 would do half the work for nothing).
    pub fn microkernels(&self) -> Vec<(usize, usize)> {
        let mut rows = vec![self.mr];
        if !self.m.is_multiple_of(self.mr) {
            rows.push(self.m % self.mr);
        }
        let nr = self.tier.nr();
        let mut cols = vec![nr];
        if (1..=nr / 2).contains(&(self.n % nr)) {
            cols.push(nr / 2);
        }
        rows.iter().flat_map(|&r| cols.iter().map(move |&c| (r, c))).collect()
    }
    /// The epilogue the microkernels apply themselves, when the GEMM's is the common conv one:
    /// no alpha, a bias per row of C (or none), then only ReLU and Clip steps.
    pub fn wide_epilogue(&self) -> Option<crate::codegen::wide::WideEpilogue> {
        use crate::codegen::wide::{WideAct, WideEpilogue};
        if !self.tier.is_wide() || !self.has_epilogue() || self.alpha != 1.0 {
            return None;
        }
        if self.bias.is_some_and(|b| b.rs != 1 || b.cs != 0) {
            return None;
        }
        let mut acts = vec![];
        for s in &self.steps {
            match s {
                // One residual laid out like C: the kernel reads it at C's row stride.
                GemmStep::Add(m) if *m == self.c && !acts.contains(&WideAct::Add) => acts.push(WideAct::Add),
                GemmStep::Act(a) => acts.extend(WideAct::of(a)?),
                _ => return None,
            }
        }
        Some(WideEpilogue { bias: self.bias.is_some(), acts })
    }

    /// The machine-code microkernels a wide GEMM calls, in operand order (see `microkernels`).
    pub fn wide_kernels(&self) -> Vec<crate::codegen::wide::WideMicrokernel> {
        let epilogue = self.wide_epilogue();
        // B packed in panels steps NR floats per k; read in place, its row stride. A bf16
        // microkernel reads the pair buffer, or an implicit conv's planes a plane per pair.
        assert!(self.b.cs == 1, "a wide GEMM reads B rows of contiguous columns");
        let b_row_bytes = match self.b_taps {
            Some(t) => Some(t.plane_bytes as i32),
            None => (self.b.rs != self.tier.nr() as isize && self.bf16.is_none()).then(|| (self.b.rs * 4) as i32),
        };
        self.microkernels()
            .into_iter()
            .map(|(rows, cols)| crate::codegen::wide::WideMicrokernel {
                tier: self.tier,
                rows,
                cols,
                epilogue: epilogue.clone(),
                b_row_bytes,
                bf16: self.bf16.is_some(),
                taps: self.b_taps.map(|t| crate::codegen::wide::TapLoop {
                    kh: self.k / t.cpad / t.kw,
                    kw: t.kw,
                    pairs: t.cpad / 2,
                    row_bytes: t.row_bytes as i32,
                }),
            })
            .collect()
    }

    /// The pair packers a bf16 GEMM calls, in operand order (after the microkernels): the
    /// panel's full width, then half of it when the last panel takes the narrow microkernel.
    pub fn packers(&self) -> Vec<PairPack> {
        let Some(t) = self.bf16.filter(|_| !self.b_pairs) else { return vec![] };
        let nr = self.tier.nr();
        let narrow = self.microkernels().iter().any(|&(_, c)| c == nr / 2);
        let pack = |cols| PairPack { cols, src_row_bytes: (self.b.rs * 4) as i32, pad: t.k_step() };
        std::iter::once(pack(nr)).chain(narrow.then(|| pack(nr / 2))).collect()
    }

    /// Every machine-code kernel a wide GEMM calls, in operand order: microkernels, then
    /// pair packers, then (AMX) the tile configuration and release.
    pub fn called_kernels(&self) -> Vec<std::sync::Arc<dyn KernelSpec>> {
        let mut out: Vec<std::sync::Arc<dyn KernelSpec>> = vec![];
        if self.bf16 == Some(Bf16Tier::Amx) {
            let epilogue = self.wide_epilogue();
            for (rows, cols) in self.microkernels() {
                out.push(std::sync::Arc::new(AmxMicrokernel { rows, cols, epilogue: epilogue.clone() }));
            }
        } else {
            for k in self.wide_kernels() {
                out.push(std::sync::Arc::new(k));
            }
        }
        for p in self.packers() {
            out.push(std::sync::Arc::new(p));
        }
        if self.bf16 == Some(Bf16Tier::Amx) {
            out.push(std::sync::Arc::new(AmxTiles { release: false }));
            out.push(std::sync::Arc::new(AmxTiles { release: true }));
        }
        out
    }

    /// Whether the output needs more than the plain product.
    fn has_epilogue(&self) -> bool {
        self.alpha != 1.0 || self.bias.is_some() || !self.steps.is_empty()
    }
    fn m_tiles(&self) -> usize {
        self.pm().div_ceil(self.m_panels)
    }
    fn n_tiles(&self) -> usize {
        self.pn().div_ceil(self.n_panels)
    }
    pub fn tiles(&self) -> usize {
        self.batch * self.m_tiles() * self.n_tiles()
    }
    pub fn needs_helpers(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, GemmStep::Act(a) if act_needs_helpers(a)))
    }
    pub fn flops(&self) -> u64 {
        2 * (self.batch * self.m * self.n * self.k) as u64
    }
}

/// What an AVX2 panel works with besides its position.
struct WidePanel {
    first: Value,
    last: Value,
    a0: Value,
    b0: Value,
    c0: Value,
    scratch: Value,
    ukernel: Value,
    /// A bf16 GEMM's pair buffer: what the microkernel reads instead of the B panel.
    pairs: Option<Value>,
}

/// Pointer to element (r, c) of operand `base` for batch `bvalue`.
fn batch_base(kb: &mut Kb, base: Value, mat: &Mat, b: Value) -> Value {
    let idx = if mat.batch_mod > 0 { kb.divmod(b, mat.batch_mod as i64).1 } else { b };
    let off = kb.muli(idx, mat.batch_stride as i64);
    kb.elem(base, off, 4)
}

/// The innermost register tile: `rows` x NR outputs, kept in f32x4 accumulators over a K block.
/// Other tile shapes or instruction sets can be added beside this without touching the loop nest.
pub struct Microkernel {
    pub rows: usize,
}

impl Microkernel {
    /// Accumulates `kc` steps: acc[r] += A(r, k) * B(k, 0..4). `a` and `b` point at the panels'
    /// first k of the block; `a_rs`/`a_cs` and `b_rs` are element strides.
    #[allow(clippy::too_many_arguments)]
    pub fn accumulate(
        &self,
        kb: &mut Kb,
        acc: &[Variable],
        a: Value,
        a_rs: isize,
        a_cs: isize,
        b: Value,
        b_rs: isize,
        kc: Value,
    ) {
        // `unroll` k steps per iteration, then the remaining ones one at a time. Cranelift's FMA
        // writes its result over a multiplicand, so each step shifts the accumulators by one
        // register; after rows + 1 steps they are back where they started, and the loop needs
        // no moves.
        let unroll = acc.len() as i64 + 1;
        let (da, db) = (a_cs as i64 * 4, b_rs as i64 * 4);
        let pa = kb.var(I64, a);
        let pb = kb.var(I64, b);
        // `n` k steps from the current pointers, at immediate offsets, then one pointer bump:
        // no address arithmetic between the FMAs.
        let steps = |kb: &mut Kb, n: i64| {
            let (a, b) = (kb.b.use_var(pa), kb.b.use_var(pb));
            for s in 0..n {
                let bv = kb.load_v(b, (s * db) as i32, ro());
                for (r, &v) in acc.iter().enumerate() {
                    let av = kb.load_f32(a, (s * da + r as i64 * a_rs as i64 * 4) as i32, ro());
                    let avs = kb.splat(av);
                    let cur = kb.b.use_var(v);
                    let nv = kb.fma(avs, bv, cur);
                    kb.b.def_var(v, nv);
                }
            }
            let a2 = kb.addi(a, n * da);
            let b2 = kb.addi(b, n * db);
            kb.b.def_var(pa, a2);
            kb.b.def_var(pb, b2);
        };
        let zero = kb.iconst(0);
        let main = if unroll > 1 {
            let u = kb.iconst(unroll);
            let q = kb.b.ins().udiv(kc, u);
            kb.muli(q, unroll)
        } else {
            kc
        };
        kb.for_range(zero, main, unroll, |kb, _| steps(kb, unroll));
        if unroll > 1 {
            kb.for_range(main, kc, 1, |kb, _| steps(kb, 1));
        }
    }
}

impl KernelSpec for GemmSpec {
    fn name(&self) -> String {
        let tier = self.bf16.map_or(self.tier.name(), |t| t.name());
        format!("gemm {}x{}x{} b{} {tier}", self.m, self.n, self.k, self.batch)
    }

    fn bf16(&self) -> Option<Bf16Tier> {
        self.bf16
    }

    /// `opt_level=speed` reorders the unrolled steps so that more B vectors stay live, and the
    /// loop spills (1024^3: 110 ms against 55 ms as emitted).
    fn optimize(&self) -> bool {
        false
    }

    fn emit(&self, kb: &mut Kb) {
        let n_adds = self.steps.iter().filter(|s| matches!(s, GemmStep::Add(_))).count();
        let n_ops = 3 + self.bias.is_some() as usize + n_adds;
        let ops = kb.operands(n_ops);
        let helpers = self.needs_helpers().then(|| kb.operand(n_ops));
        let ukernels: Vec<Value> = match self.tier {
            Tier::F32x4 => vec![],
            Tier::Avx2 | Tier::Avx512 => {
                let first = n_ops + helpers.is_some() as usize;
                (0..self.microkernels().len()).map(|i| kb.operand(first + i)).collect()
            }
        };
        let kernels = self.microkernels();
        let packers: Vec<Value> = {
            let first = n_ops + helpers.is_some() as usize + ukernels.len();
            (0..self.packers().len()).map(|i| kb.operand(first + i)).collect()
        };
        let nr = self.tier.nr();
        let narrow_tail = kernels.iter().any(|&(_, c)| c == nr / 2);
        // A bf16 GEMM's pair buffer: one K block of one column panel.
        let pairs =
            self.bf16.filter(|_| !self.b_pairs).map(|t| kb.stack_buffer(t.pair_bytes(self.kc.min(self.k)) as u32));
        // AMX: the tile configuration (per thread) around this call's tiles.
        let amx = (self.bf16 == Some(Bf16Tier::Amx)).then(|| {
            let first = n_ops + helpers.is_some() as usize + ukernels.len() + packers.len();
            (kb.operand(first), kb.operand(first + 1))
        });
        if let Some((config, _)) = amx {
            kb.call_code(config, &[]);
        }
        // The microkernel for a row count and column count.
        let ukernel = |rows: usize, cols: usize| {
            ukernels[kernels.iter().position(|&k| k == (rows, cols)).expect("the GEMM lists its microkernels")]
        };
        // The AVX2 path stages partial and epilogue tiles in a stack buffer.
        let scratch = self.tier.is_wide().then(|| kb.stack_buffer((self.mr * nr * 4) as u32));
        let (pm, pn, mt, nt) = (self.pm(), self.pn(), self.m_tiles(), self.n_tiles());
        let mr = self.mr;
        let kcv = self.kc;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (bm, tn) = kb.divmod(t, nt as i64);
            let (bi, tm) = kb.divmod(bm, mt as i64);
            let a0 = batch_base(kb, ops[0], &self.a, bi);
            let b0 = batch_base(kb, ops[1], &self.b, bi);
            let c0 = batch_base(kb, ops[2], &self.c, bi);
            let mut extra = 3;
            let bias0 = self.bias.as_ref().map(|m| {
                let v = batch_base(kb, ops[extra], m, bi);
                extra += 1;
                (v, *m)
            });
            let adds: Vec<(Value, Mat)> = self
                .steps
                .iter()
                .filter_map(|s| match s {
                    GemmStep::Add(m) => {
                        let v = batch_base(kb, ops[extra], m, bi);
                        extra += 1;
                        Some((v, *m))
                    }
                    _ => None,
                })
                .collect();
            // Panel ranges of this tile.
            let i0 = kb.muli(tm, self.m_panels as i64);
            let i1 = {
                let e = kb.addi(i0, self.m_panels as i64);
                let p = kb.iconst(pm as i64);
                kb.b.ins().smin(e, p)
            };
            let j0 = kb.muli(tn, self.n_panels as i64);
            let j1 = {
                let e = kb.addi(j0, self.n_panels as i64);
                let p = kb.iconst(pn as i64);
                kb.b.ins().smin(e, p)
            };
            let kk = self.k as i64;
            let blocks = self.k.div_ceil(kcv) as i64;
            kb.for_const(0, blocks, 1, |kb, pc| {
                let k0 = kb.muli(pc, kcv as i64);
                let kc = {
                    let rest = kb.rsubi(kk, k0);
                    kb.mini(rest, kcv as i64)
                };
                let first = kb.eqi(pc, 0);
                let last = kb.eqi(pc, blocks - 1);
                kb.for_range(j0, j1, 1, |kb, j| {
                    // bf16: this panel's K block in pairs, shared by every row panel below.
                    if let Some(buf) = pairs {
                        let b_panel = self.b_block(kb, b0, j, k0);
                        if packers.len() > 1 {
                            let is_tail = kb.eqi(j, pn as i64 - 1);
                            let (tail_b, wide_b, join) =
                                (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
                            kb.b.ins().brif(is_tail, tail_b, &[], wide_b, &[]);
                            kb.b.switch_to_block(tail_b);
                            kb.call_code(packers[1], &[b_panel, buf, kc]);
                            kb.b.ins().jump(join, &[]);
                            kb.b.switch_to_block(wide_b);
                            kb.call_code(packers[0], &[b_panel, buf, kc]);
                            kb.b.ins().jump(join, &[]);
                            kb.b.switch_to_block(join);
                        } else {
                            kb.call_code(packers[0], &[b_panel, buf, kc]);
                        }
                    }
                    kb.for_range(i0, i1, 1, |kb, i| {
                        // Full panels take the MR-row kernel; the last, partial one its own.
                        let rows_full = mr;
                        let rem = self.m % mr;
                        let emit_panel = |kb: &mut Kb, rows: usize| match (self.tier, scratch) {
                            (Tier::Avx2 | Tier::Avx512, Some(scratch)) => {
                                let call = |kb: &mut Kb, cols: usize| {
                                    let w = WidePanel {
                                        first,
                                        last,
                                        a0,
                                        b0,
                                        c0,
                                        scratch,
                                        ukernel: ukernel(rows, cols),
                                        pairs,
                                    };
                                    self.wide_panel(kb, rows, i, j, k0, kc, &w, bias0, &adds, helpers);
                                };
                                if narrow_tail {
                                    let is_tail = kb.eqi(j, pn as i64 - 1);
                                    let (tail_b, wide_b, join) =
                                        (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
                                    kb.b.ins().brif(is_tail, tail_b, &[], wide_b, &[]);
                                    kb.b.switch_to_block(tail_b);
                                    call(kb, nr / 2);
                                    kb.b.ins().jump(join, &[]);
                                    kb.b.switch_to_block(wide_b);
                                    call(kb, nr);
                                    kb.b.ins().jump(join, &[]);
                                    kb.b.switch_to_block(join);
                                } else {
                                    call(kb, nr);
                                }
                            }
                            _ => self.panel(kb, rows, i, j, k0, kc, first, last, a0, b0, c0, bias0, &adds, helpers),
                        };
                        if rem == 0 {
                            emit_panel(kb, rows_full);
                        } else {
                            let is_last = kb.eqi(i, pm as i64 - 1);
                            let (full_b, part_b, join) =
                                (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
                            kb.b.ins().brif(is_last, part_b, &[], full_b, &[]);
                            kb.b.switch_to_block(full_b);
                            emit_panel(kb, rows_full);
                            kb.b.ins().jump(join, &[]);
                            kb.b.switch_to_block(part_b);
                            emit_panel(kb, rem);
                            kb.b.ins().jump(join, &[]);
                            kb.b.switch_to_block(join);
                        }
                    });
                });
            });
        });
        if let Some((_, release)) = amx {
            kb.call_code(release, &[]);
        }
    }
}

impl GemmSpec {
    /// B's column panel `j` at the K block starting at `k0`.
    fn b_block(&self, kb: &mut Kb, b0: Value, j: Value, k0: Value) -> Value {
        let pj = kb.muli(j, self.b.panel_stride as i64);
        let kk = match self.b_taps {
            // Tap (ky, kx) and first channel c0 of the block (blocks never span taps).
            Some(t) => {
                let (tap, c0) = kb.divmod(k0, t.cpad as i64);
                let (ky, kx) = kb.divmod(tap, t.kw as i64);
                let pair = kb.divmod(c0, 2).0;
                let a = kb.muli(pair, t.plane_bytes);
                let b = kb.muli(ky, t.row_bytes);
                let c = kb.muli(kx, 4);
                let ab = kb.add(a, b);
                let bytes = kb.add(ab, c);
                // In the GEMM's 4-byte units (every term is a multiple of 4).
                kb.divmod(bytes, 4).0
            }
            None => kb.muli(k0, self.b.rs as i64),
        };
        let o = kb.add(pj, kk);
        kb.elem(b0, o, 4)
    }

    /// One register tile: `rows` x NR outputs at panel (i, j), over the K block [k0, k0 + kc).
    #[allow(clippy::too_many_arguments)]
    fn panel(
        &self,
        kb: &mut Kb,
        rows: usize,
        i: Value,
        j: Value,
        k0: Value,
        kc: Value,
        first: Value,
        last: Value,
        a0: Value,
        b0: Value,
        c0: Value,
        bias: Option<(Value, Mat)>,
        adds: &[(Value, Mat)],
        helpers: Option<Value>,
    ) {
        let mr = self.mr as i64;
        // Output rows m = i*MR + r and columns n = j*NR + c.
        let m0 = kb.muli(i, mr);
        let n0 = kb.muli(j, NR as i64);
        let ncols = {
            let rest = kb.rsubi(self.n as i64, n0);
            kb.mini(rest, NR as i64)
        };
        let full_cols = kb.eqi(ncols, NR as i64);
        // C tile pointer: c0 + m0*rs + n0.
        let c_row = kb.muli(m0, self.c.rs as i64);
        let c_off = kb.add(c_row, n0);
        let pc = kb.elem(c0, c_off, 4);
        // Accumulators start at zero on the first K block, else from C.
        let zero = kb.vconst(0.0);
        let acc: Vec<Variable> = (0..rows).map(|_| kb.var(F32X4, zero)).collect();
        let not_first = {
            let (blk_load, join) = (kb.b.create_block(), kb.b.create_block());
            kb.b.ins().brif(first, join, &[], blk_load, &[]);
            kb.b.switch_to_block(blk_load);
            (blk_load, join)
        };
        for (r, &v) in acc.iter().enumerate() {
            let val = self.load_tile_row(kb, pc, r, full_cols, ncols);
            kb.b.def_var(v, val);
        }
        kb.b.ins().jump(not_first.1, &[]);
        kb.b.switch_to_block(not_first.1);
        // A panel at (m panel i, k0), B panel at (n panel j, k0).
        let a_panel = {
            let pi = kb.muli(i, self.a.panel_stride as i64);
            let kk = kb.muli(k0, self.a.cs as i64);
            let o = kb.add(pi, kk);
            kb.elem(a0, o, 4)
        };
        let b_panel = {
            let pj = kb.muli(j, self.b.panel_stride as i64);
            let kk = kb.muli(k0, self.b.rs as i64);
            let o = kb.add(pj, kk);
            kb.elem(b0, o, 4)
        };
        Microkernel { rows }.accumulate(kb, &acc, a_panel, self.a.rs, self.a.cs, b_panel, self.b.rs, kc);
        // Not the last K block: store partial sums. The last: finish and store.
        let (store_b, finish_b, join) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
        kb.b.ins().brif(last, finish_b, &[], store_b, &[]);
        kb.b.switch_to_block(store_b);
        for (r, &v) in acc.iter().enumerate() {
            let val = kb.b.use_var(v);
            self.store_tile_row(kb, pc, r, val, full_cols, ncols);
        }
        kb.b.ins().jump(join, &[]);
        kb.b.switch_to_block(finish_b);
        let alpha = (self.alpha != 1.0).then(|| kb.vconst(self.alpha));
        for (r, &v) in acc.iter().enumerate() {
            let mut val = kb.b.use_var(v);
            if let Some(a) = alpha {
                val = kb.b.ins().fmul(val, a);
            }
            let m = kb.addi(m0, r as i64);
            if let Some((bp, mat)) = bias {
                let bv = self.load_operand(kb, bp, &mat, m, n0, full_cols, ncols);
                val = kb.b.ins().fadd(val, bv);
            }
            let mut add_i = 0;
            for s in &self.steps {
                match s {
                    GemmStep::Add(_) => {
                        let (p, mat) = adds[add_i];
                        add_i += 1;
                        let ov = self.load_operand(kb, p, &mat, m, n0, full_cols, ncols);
                        val = kb.b.ins().fadd(val, ov);
                    }
                    GemmStep::Act(a) => val = emit_act(kb, a, val, helpers),
                }
            }
            self.store_tile_row(kb, pc, r, val, full_cols, ncols);
        }
        kb.b.ins().jump(join, &[]);
        kb.b.switch_to_block(join);
    }

    /// One wide register tile: `rows` x NR outputs at panel (i, j) over the K block
    /// [k0, k0 + kc). The microkernel writes straight into C when the columns are whole and the
    /// values are partial sums, plain products, or finished by its own epilogue; otherwise (a
    /// partial panel, or the last block of a GEMM whose epilogue the microkernel cannot apply)
    /// into the scratch tile, from which they are copied, or finished, into C. Both finishes read
    /// an in-place epilogue operand (sharing C's memory) before writing over it.
    #[allow(clippy::too_many_arguments)]
    fn wide_panel(
        &self,
        kb: &mut Kb,
        rows: usize,
        i: Value,
        j: Value,
        k0: Value,
        kc: Value,
        w: &WidePanel,
        bias: Option<(Value, Mat)>,
        adds: &[(Value, Mat)],
        helpers: Option<Value>,
    ) {
        let nr = self.tier.nr() as i64;
        let m0 = kb.muli(i, self.mr as i64);
        let n0 = kb.muli(j, nr);
        let ncols = {
            let rest = kb.rsubi(self.n as i64, n0);
            kb.mini(rest, nr)
        };
        let full_cols = kb.eqi(ncols, nr);
        let pc = {
            let r = kb.muli(m0, self.c.rs as i64);
            let o = kb.add(r, n0);
            kb.elem(w.c0, o, 4)
        };
        let a_panel = {
            let pi = kb.muli(i, self.a.panel_stride as i64);
            let kk = kb.muli(k0, self.a.cs as i64);
            let o = kb.add(pi, kk);
            kb.elem(w.a0, o, 4)
        };
        let b_panel = match w.pairs {
            Some(p) => p,
            None => self.b_block(kb, w.b0, j, k0),
        };
        let accumulate = {
            let f = kb.b.ins().uextend(I64, w.first);
            kb.b.ins().bxor_imm_u(f, 1)
        };
        let ldc = kb.iconst(self.c.rs as i64 * 4);
        // The microkernel finishes whole tiles itself when it carries the epilogue.
        let in_kernel = self.wide_epilogue().is_some();
        let direct = if self.has_epilogue() && !in_kernel {
            let not_last = kb.b.ins().bxor_imm_u(w.last, 1);
            kb.b.ins().band(full_cols, not_last)
        } else {
            full_cols
        };
        let bias_row = match bias {
            Some((bp, _)) if in_kernel => kb.elem(bp, m0, 4),
            _ => kb.iconst(0),
        };
        // The residual's tile, at C's offsets (an in-kernel add is laid out like C).
        let residual = match adds.first() {
            Some(&(rp, _)) if in_kernel => {
                let r = kb.muli(m0, self.c.rs as i64);
                let o = kb.add(r, n0);
                kb.elem(rp, o, 4)
            }
            _ => kb.iconst(0),
        };
        let (direct_b, staged_b, join) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
        kb.b.ins().brif(direct, direct_b, &[], staged_b, &[]);
        kb.b.switch_to_block(direct_b);
        let flags = if in_kernel {
            let l = kb.b.ins().uextend(I64, w.last);
            let l2 = kb.b.ins().ishl_imm_u(l, 1);
            kb.b.ins().bor(accumulate, l2)
        } else {
            accumulate
        };
        kb.call_code(w.ukernel, &[a_panel, b_panel, pc, ldc, kc, flags, bias_row, residual]);
        kb.b.ins().jump(join, &[]);
        kb.b.switch_to_block(staged_b);
        // Partial sums of earlier K blocks come from C.
        let not_first = kb.b.ins().bxor_imm_u(w.first, 1);
        kb.if_then(not_first, |kb| self.copy_tile(kb, pc, self.c.rs, w.scratch, nr as isize, rows, ncols, full_cols));
        let tile_stride = kb.iconst(nr * 4);
        kb.call_code(w.ukernel, &[a_panel, b_panel, w.scratch, tile_stride, kc, accumulate, bias_row, residual]);
        if self.has_epilogue() {
            let (fin_b, copy_b, done) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
            kb.b.ins().brif(w.last, fin_b, &[], copy_b, &[]);
            kb.b.switch_to_block(fin_b);
            self.finish_tile(kb, rows, m0, n0, ncols, full_cols, w.scratch, pc, bias, adds, helpers);
            kb.b.ins().jump(done, &[]);
            kb.b.switch_to_block(copy_b);
            self.copy_tile(kb, w.scratch, nr as isize, pc, self.c.rs, rows, ncols, full_cols);
            kb.b.ins().jump(done, &[]);
            kb.b.switch_to_block(done);
        } else {
            self.copy_tile(kb, w.scratch, nr as isize, pc, self.c.rs, rows, ncols, full_cols);
        }
        kb.b.ins().jump(join, &[]);
        kb.b.switch_to_block(join);
    }

    /// Copies `rows` x `ncols` floats between tiles with row strides `src_rs` and `dst_rs`
    /// (elements): whole f32x4 rows when the columns are whole, one float at a time otherwise.
    #[allow(clippy::too_many_arguments)]
    fn copy_tile(
        &self,
        kb: &mut Kb,
        src: Value,
        src_rs: isize,
        dst: Value,
        dst_rs: isize,
        rows: usize,
        ncols: Value,
        full: Value,
    ) {
        let (full_b, part_b, join) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
        kb.b.ins().brif(full, full_b, &[], part_b, &[]);
        kb.b.switch_to_block(full_b);
        kb.for_const(0, rows as i64, 1, |kb, r| {
            let (s, d) = (kb.row(src, r, src_rs as i64), kb.row(dst, r, dst_rs as i64));
            for q in 0..self.tier.nr() / 4 {
                let v = kb.load_v(s, (16 * q) as i32, rw());
                kb.store_v(v, d, (16 * q) as i32);
            }
        });
        kb.b.ins().jump(join, &[]);
        kb.b.switch_to_block(part_b);
        let zero = kb.iconst(0);
        kb.for_range(zero, ncols, 1, |kb, c| {
            let s = kb.elem(src, c, 4);
            let d = kb.elem(dst, c, 4);
            for r in 0..rows {
                let x = kb.load_f32(s, (r as isize * src_rs * 4) as i32, rw());
                kb.store_f32(x, d, (r as isize * dst_rs * 4) as i32);
            }
        });
        kb.b.ins().jump(join, &[]);
        kb.b.switch_to_block(join);
    }

    /// The epilogue of a finished tile: `scratch` (row stride NR) holds the products; alpha,
    /// bias, adds and activations go on into C at `pc`. Whole tiles run four columns at a time;
    /// a partial tile (the last column panel only) one column at a time in a loop, which keeps
    /// the kernel small.
    #[allow(clippy::too_many_arguments)]
    fn finish_tile(
        &self,
        kb: &mut Kb,
        rows: usize,
        m0: Value,
        n0: Value,
        ncols: Value,
        full_cols: Value,
        scratch: Value,
        pc: Value,
        bias: Option<(Value, Mat)>,
        adds: &[(Value, Mat)],
        helpers: Option<Value>,
    ) {
        // One value (a vector of four columns or one column) through the epilogue.
        let finish = |kb: &mut Kb, mut val: Value, m: Value, n: Value, vector: bool| {
            if self.alpha != 1.0 {
                let a = if vector { kb.vconst(self.alpha) } else { kb.fconst(self.alpha) };
                val = kb.b.ins().fmul(val, a);
            }
            let operand = |kb: &mut Kb, p: Value, mat: &Mat| {
                let row = kb.muli(m, mat.rs as i64);
                if mat.cs == 0 || !vector {
                    let col = kb.muli(n, mat.cs as i64);
                    let o = kb.add(row, col);
                    let q = kb.elem(p, o, 4);
                    let x = kb.load_f32(q, 0, ro());
                    if vector { kb.splat(x) } else { x }
                } else {
                    let col = kb.muli(n, mat.cs as i64);
                    let o = kb.add(row, col);
                    let q = kb.elem(p, o, 4);
                    kb.load_v(q, 0, ro())
                }
            };
            if let Some((bp, mat)) = bias {
                let bv = operand(kb, bp, &mat);
                val = kb.b.ins().fadd(val, bv);
            }
            let mut add_i = 0;
            for s in &self.steps {
                match s {
                    GemmStep::Add(_) => {
                        let (p, mat) = adds[add_i];
                        add_i += 1;
                        let ov = operand(kb, p, &mat);
                        val = kb.b.ins().fadd(val, ov);
                    }
                    GemmStep::Act(a) => val = emit_act(kb, a, val, helpers),
                }
            }
            val
        };
        let nr = self.tier.nr();
        let (full_b, part_b, join) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
        kb.b.ins().brif(full_cols, full_b, &[], part_b, &[]);
        kb.b.switch_to_block(full_b);
        // A loop over rows, not unrolled: the AVX-512 tile would otherwise repeat the epilogue
        // 96 times per GEMM.
        kb.for_const(0, rows as i64, 1, |kb, r| {
            let m = kb.add(m0, r);
            let (src, dst) = (kb.row(scratch, r, nr as i64), kb.row(pc, r, self.c.rs as i64));
            for q in 0..nr / 4 {
                let val = kb.load_v(src, (16 * q) as i32, rw());
                let n = kb.addi(n0, 4 * q as i64);
                let val = finish(kb, val, m, n, true);
                kb.store_v(val, dst, (16 * q) as i32);
            }
        });
        kb.b.ins().jump(join, &[]);
        kb.b.switch_to_block(part_b);
        let zero = kb.iconst(0);
        kb.for_range(zero, ncols, 1, |kb, c| {
            let n = kb.add(n0, c);
            let src = kb.elem(scratch, c, 4);
            let dst = kb.elem(pc, c, 4);
            for r in 0..rows {
                let m = kb.addi(m0, r as i64);
                let val = kb.load_f32(src, (r * nr * 4) as i32, rw());
                let val = finish(kb, val, m, n, false);
                kb.store_f32(val, dst, (r as isize * self.c.rs * 4) as i32);
            }
        });
        kb.b.ins().jump(join, &[]);
        kb.b.switch_to_block(join);
    }

    /// Loads row r of the C tile (all NR columns, or the valid ones with zeros after).
    fn load_tile_row(&self, kb: &mut Kb, pc: Value, r: usize, full: Value, ncols: Value) -> Value {
        let off = (r as isize * self.c.rs * 4) as i32;
        let (fb, pb, join) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
        kb.b.append_block_param(join, F32X4);
        kb.b.ins().brif(full, fb, &[], pb, &[]);
        kb.b.switch_to_block(fb);
        let v = kb.load_v(pc, off, crate::codegen::builder::rw());
        kb.b.ins().jump(join, &[cranelift_codegen::ir::BlockArg::Value(v)]);
        kb.b.switch_to_block(pb);
        let mut v = kb.vconst(0.0);
        for c in 0..NR {
            let cv = kb.iconst(c as i64);
            let inside = kb.lt(cv, ncols);
            let (lb, nb) = (kb.b.create_block(), kb.b.create_block());
            kb.b.append_block_param(nb, F32X4);
            kb.b.ins().brif(inside, lb, &[], nb, &[cranelift_codegen::ir::BlockArg::Value(v)]);
            kb.b.switch_to_block(lb);
            let x = kb.load_f32(pc, off + 4 * c as i32, crate::codegen::builder::rw());
            let nv = kb.b.ins().insertlane(v, x, c as u8);
            kb.b.ins().jump(nb, &[cranelift_codegen::ir::BlockArg::Value(nv)]);
            kb.b.switch_to_block(nb);
            v = kb.b.block_params(nb)[0];
        }
        kb.b.ins().jump(join, &[cranelift_codegen::ir::BlockArg::Value(v)]);
        kb.b.switch_to_block(join);
        kb.b.block_params(join)[0]
    }

    /// Stores row r of the C tile (all NR columns, or only the valid ones).
    fn store_tile_row(&self, kb: &mut Kb, pc: Value, r: usize, v: Value, full: Value, ncols: Value) {
        let off = (r as isize * self.c.rs * 4) as i32;
        let (fb, pb, join) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
        kb.b.ins().brif(full, fb, &[], pb, &[]);
        kb.b.switch_to_block(fb);
        kb.store_v(v, pc, off);
        kb.b.ins().jump(join, &[]);
        kb.b.switch_to_block(pb);
        for c in 0..NR {
            let cv = kb.iconst(c as i64);
            let inside = kb.lt(cv, ncols);
            kb.if_then(inside, |kb| {
                let x = kb.b.ins().extractlane(v, c as u8);
                kb.store_f32(x, pc, off + 4 * c as i32);
            });
        }
        kb.b.ins().jump(join, &[]);
        kb.b.switch_to_block(join);
    }

    /// An epilogue operand at row m, columns n0..n0+4: a vector when it varies along n, a splat
    /// when it does not (per-row bias).
    #[allow(clippy::too_many_arguments)]
    fn load_operand(
        &self,
        kb: &mut Kb,
        base: Value,
        mat: &Mat,
        m: Value,
        n0: Value,
        full: Value,
        ncols: Value,
    ) -> Value {
        let row = kb.muli(m, mat.rs as i64);
        if mat.cs == 0 {
            let p = kb.elem(base, row, 4);
            let s = kb.load_f32(p, 0, ro());
            return kb.splat(s);
        }
        let col = kb.muli(n0, mat.cs as i64);
        let o = kb.add(row, col);
        let p = kb.elem(base, o, 4);
        // Reuse the tile-row loader's masking with the operand's own row stride.
        let spec = GemmSpec { c: Mat { rs: 0, ..*mat }, ..self.clone() };
        spec.load_tile_row(kb, p, 0, full, ncols)
    }
}
