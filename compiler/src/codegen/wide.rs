//! The wide tiers on x86-64: machine code for AVX2 + FMA and for AVX-512F written with an
//! assembler (`iced-x86`), beside the Cranelift kernels, because Cranelift lowers no vector wider
//! than 128 bits there.
//!
//! Only the innermost GEMM register tile is written this way. The loop nest around it (tiles,
//! K blocks, panels, partial tiles, the epilogue) stays in Cranelift and calls the microkernel
//! through a pointer it receives as an operand, so every other kernel family is unchanged.
//!
//! The microkernel (`rows` x `cols` outputs, `rows` <= MR, `cols` = NR or NR / 2 of its ISA)
//! computes `C[r][0..cols] (+)= sum_k A[k][r] * B[k][0..cols]` over `kc` steps of K, with
//!
//! ```text
//! extern "sysv64" fn(a: *const f32,  // rdi: A panel at the first k: [k][MR] floats
//!                    b: *const f32,  // rsi: B panel at the first k: [k][NR] floats (or rows
//!                                    //      `b_row_bytes` apart, read in place)
//!                    c: *mut f32,    // rdx: the tile's first element
//!                    ldc: usize,     // rcx: bytes from one tile row to the next
//!                    kc: usize,      // r8:  K steps, at least 1
//!                    flags: usize,   // r9:  bit 0 adds C's values to the sums; bit 1 then
//!                                    //      applies the kernel's epilogue (if it has one)
//!                    bias: *const f32, // stack: the tile's first row's bias (epilogue with bias)
//!                    residual: *const f32) // stack: the residual tile (epilogue with an add)
//! ```
//!
//! The epilogue a microkernel may carry is the common conv one: a per-row bias, then ReLU and
//! Clip steps and at most one residual add (laid out like C), with the exact operations of the Cranelift epilogue (`max(lo, x)` and
//! `min(hi, x)` in the operand order that keeps NaN and -0 as the reference does). GEMMs with
//! other epilogues (broadcast adds, alpha, other activations) finish their tiles in Cranelift.
//!
//! AVX2 (MR 6, NR 16): twelve ymm accumulators (two per row), two B vectors and two broadcasts
//! of A fill the 16 ymm registers. Only VEX encodings, so it runs on every AVX2 + FMA CPU.
//! AVX-512 (MR 12, NR 32): 24 zmm accumulators, two B vectors and four rotating broadcasts of
//! 32 zmm registers; 14 loads feed 24 FMAs per K step (embedded broadcasts would cost a load per
//! FMA). Both unroll K four times and embed no address, so the code runs wherever it is mapped.

use iced_x86::code_asm::*;

use super::{CodegenError, KernelSpec, Tier};

/// Rows of the AVX2 register tile (and of a packed A panel).
pub const MR_WIDE: usize = 6;
/// Columns of the AVX2 register tile (and of a packed B panel): two ymm vectors.
pub const NR_WIDE: usize = 16;
/// Rows of the AVX-512 register tile.
pub const MR_512: usize = 12;
/// Columns of the AVX-512 register tile: two zmm vectors.
pub const NR_512: usize = 32;
/// How many K steps ahead the microkernels prefetch their A panel.
const A_AHEAD: usize = 64;

/// Whether this CPU runs the AVX2 tier.
pub fn host_has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs the AVX-512 tier.
pub fn host_has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && host_has_avx2()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The wide tiers this CPU runs, narrowest first.
pub fn host_wide_tiers() -> Vec<Tier> {
    let mut tiers = vec![];
    if host_has_avx2() {
        tiers.push(Tier::Avx2);
    }
    if host_has_avx512() {
        tiers.push(Tier::Avx512);
    }
    tiers
}

pub(crate) fn asm_err(e: IcedError) -> CodegenError {
    CodegenError::Compile { kernel: "wide microkernel".into(), msg: e.to_string() }
}

/// The `rows` x `cols` microkernel of a wide tier (see the module documentation): `cols` is the
/// tier's NR, or NR / 2 for the last panel of a GEMM whose N leaves that few columns there (the
/// panel is still packed NR wide; the kernel reads its first half).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WideMicrokernel {
    pub tier: Tier,
    pub rows: usize,
    pub cols: usize,
    /// The epilogue applied when flags bit 1 is set; `None`: the bit is ignored.
    pub epilogue: Option<WideEpilogue>,
    /// Bytes from one K step's B row to the next when B is read in place (a 1x1 conv's input,
    /// rows of a channel's positions); `None`: a packed panel, NR floats per step.
    pub b_row_bytes: Option<i32>,
    /// AVX512-BF16: A and B hold bf16 pairs of consecutive k (see `bf16.rs`) where the f32
    /// kernel has one float, and each step is a VDPBF16PS over two k (`kc` still counts k; an
    /// odd one pairs with the zero the packing put after it); `b_row_bytes` then steps pair rows.
    pub bf16: bool,
    /// bf16 only: an implicit conv's whole K in one call (see [`TapLoop`]).
    pub taps: Option<TapLoop>,
}

/// The K loop of an implicit conv's microkernel: for each tap (ky, kx) of a `kh` x `kw` window,
/// `pairs` pair steps (channel pairs, `b_row_bytes` apart) on B shifted by `ky * row_bytes + kx *
/// 4` bytes; A runs on through the taps. The sums stay in registers over all of K.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapLoop {
    pub kh: usize,
    pub kw: usize,
    pub pairs: usize,
    pub row_bytes: i32,
}

/// An epilogue inside the microkernel: bias per row, then activations in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WideEpilogue {
    pub bias: bool,
    pub acts: Vec<WideAct>,
}

/// `Relu`: `x < 0 ? 0 : x`. `Max(lo)`: `x < lo ? lo : x`. `Min(hi)`: `hi < x ? hi : x`. Bounds
/// are f32 bit patterns. `Add`: `x + R`, R the residual tile (laid out like C).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WideAct {
    Add,
    Relu,
    Max(u32),
    Min(u32),
}

impl WideAct {
    /// The activation steps a wide kernel applies itself: ReLU, and Clip as a lower then an
    /// upper bound (either may be absent); None for any other activation.
    pub fn of(a: &incept_ir::ops::Activation) -> Option<Vec<WideAct>> {
        use incept_ir::ops::{Activation, Unary};
        match a {
            Activation::Unary(Unary::Relu) => Some(vec![WideAct::Relu]),
            Activation::Clip { min, max } => Some(
                min.map(|v| WideAct::Max(v.to_bits()))
                    .into_iter()
                    .chain(max.map(|v| WideAct::Min(v.to_bits())))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// A bound step as (bound bits, whether it is a lower bound: max), None for `Add`.
    pub fn bound(self) -> Option<(u32, bool)> {
        match self {
            WideAct::Relu => Some((0f32.to_bits(), true)),
            WideAct::Max(b) => Some((b, true)),
            WideAct::Min(b) => Some((b, false)),
            WideAct::Add => None,
        }
    }
}

/// The registers and sizes of one ISA's tile.
struct Isa {
    /// Bytes per vector.
    vbytes: i32,
    mr: usize,
    nr: usize,
}

impl WideMicrokernel {
    fn isa(&self) -> Isa {
        match self.tier {
            Tier::Avx512 => Isa { vbytes: 64, mr: MR_512, nr: NR_512 },
            _ => Isa { vbytes: 32, mr: MR_WIDE, nr: NR_WIDE },
        }
    }

    /// Assembles the microkernel.
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        let isa = self.isa();
        let rows = self.rows;
        assert!(self.tier != Tier::F32x4, "the f32x4 tier has no machine-code microkernel");
        assert!((1..=isa.mr).contains(&rows), "a {} tile has 1 to {} rows", self.tier.name(), isa.mr);
        assert!(self.cols == isa.nr / 2 || self.cols == isa.nr, "a {} tile has NR or NR / 2 columns", self.tier.name());
        assert!(!self.bf16 || self.tier == Tier::Avx512, "bf16 tiles are AVX-512");
        let vecs = if self.cols == isa.nr { 2 } else { 1 };
        let a_step = (isa.mr * 4) as i32;
        let b_step = self.b_row_bytes.unwrap_or((isa.nr * 4) as i32);
        let vb = isa.vbytes;
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        // Register roles by number: accumulators 2r and 2r + 1, then B vectors, then broadcasts.
        let (nacc, nbcast) = if vb == 64 { (24, 4) } else { (12, 2) };
        let ops = Ops { wide: vb == 64 };
        for r in 0..rows {
            for v in 0..vecs {
                ops.zero(&mut x, 2 * r + v)?;
            }
        }
        if self.bf16 && self.taps.is_none() {
            // K steps to pair steps.
            x.add(r8, 1).map_err(asm_err)?;
            x.shr(r8, 1).map_err(asm_err)?;
        }
        let bf16 = self.bf16;
        // One K step at byte offsets (da, db) from rdi / rsi. The broadcasts rotate registers so
        // that a row's FMAs do not wait for the next row's broadcast.
        let step = |x: &mut CodeAssembler, da: i32, db: i32| -> Result<(), CodegenError> {
            for v in 0..vecs {
                ops.load(x, nacc + v, rsi + db + vb * v as i32)?;
            }
            for r in 0..rows {
                let s = nacc + 2 + r % nbcast;
                ops.broadcast(x, s, rdi + da + 4 * r as i32)?;
                for v in 0..vecs {
                    if bf16 {
                        ops.dot_bf16(x, 2 * r + v, nacc + v, s)?;
                    } else {
                        ops.fma(x, 2 * r + v, nacc + v, s)?;
                    }
                }
            }
            Ok(())
        };
        let mut main = x.create_label();
        let mut tail = x.create_label();
        let mut tail_loop = x.create_label();
        let mut store = x.create_label();
        // An implicit conv's taps: the pair loop below runs once per tap, on B shifted by the
        // tap's row and column (`kc` is ignored: every tap has `pairs` pair steps).
        let (mut ky_loop, mut kx_loop, mut tap_end) = (x.create_label(), x.create_label(), x.create_label());
        let k_end = if self.taps.is_some() { tap_end } else { store };
        if let Some(t) = self.taps {
            x.mov(r10, rsi).map_err(asm_err)?;
            x.mov(r11, t.kh as u64).map_err(asm_err)?;
            x.set_label(&mut ky_loop).map_err(asm_err)?;
            x.mov(rax, t.kw as u64).map_err(asm_err)?;
            x.set_label(&mut kx_loop).map_err(asm_err)?;
            x.mov(rsi, r10).map_err(asm_err)?;
            x.mov(r8, t.pairs as u64).map_err(asm_err)?;
        }
        // Main loop: four K steps per iteration while at least four remain.
        x.cmp(r8, 4).map_err(asm_err)?;
        x.jb(tail).map_err(asm_err)?;
        x.set_label(&mut main).map_err(asm_err)?;
        for u in 0..4 {
            // Each line of B four iterations ahead is prefetched once (not when B's rows are
            // whole planes apart: that would touch a page per line, far past the block).
            // bf16 steps twice the K per load and its constant B panels (small-map convs, Gemm)
            // stream from memory: farther ahead (ResNet50's 49x512x4608 conv 350 -> 408
            // GFLOP/s at 64 pair steps).
            let ahead = if self.bf16 { 64 } else { 16 } * b_step + u * b_step;
            for line in (0..(isa.nr * 4) as i32).step_by(64).filter(|_| !self.bf16 || b_step <= 4096) {
                x.prefetcht0(byte_ptr(rsi + ahead + line)).map_err(asm_err)?;
            }
            // A streams from memory once (weights, used for few columns on small maps): the
            // hardware prefetcher alone left the 512-channel 3x3 convs on 7x7 maps of ResNet50
            // waiting on it (twelve of them: 37 -> 29.5 ms; ResNet50 65 -> 58.5 ms, one thread;
            // anywhere from 32 to 170 K steps ahead measured the same).
            if u * 64 < 4 * a_step {
                x.prefetcht0(byte_ptr(rdi + A_AHEAD as i32 * a_step + u * 64)).map_err(asm_err)?;
            }
            step(&mut x, u * a_step, u * b_step)?;
        }
        x.add(rdi, 4 * a_step).map_err(asm_err)?;
        x.add(rsi, 4 * b_step).map_err(asm_err)?;
        x.sub(r8, 4).map_err(asm_err)?;
        x.cmp(r8, 4).map_err(asm_err)?;
        x.jae(main).map_err(asm_err)?;
        // Remaining K steps one at a time.
        x.set_label(&mut tail).map_err(asm_err)?;
        x.test(r8, r8).map_err(asm_err)?;
        x.jz(k_end).map_err(asm_err)?;
        x.set_label(&mut tail_loop).map_err(asm_err)?;
        step(&mut x, 0, 0)?;
        x.add(rdi, a_step).map_err(asm_err)?;
        x.add(rsi, b_step).map_err(asm_err)?;
        x.dec(r8).map_err(asm_err)?;
        x.jnz(tail_loop).map_err(asm_err)?;
        if let Some(t) = self.taps {
            x.set_label(&mut tap_end).map_err(asm_err)?;
            x.add(r10, 4).map_err(asm_err)?;
            x.dec(rax).map_err(asm_err)?;
            x.jnz(kx_loop).map_err(asm_err)?;
            x.add(r10, t.row_bytes - 4 * t.kw as i32).map_err(asm_err)?;
            x.dec(r11).map_err(asm_err)?;
            x.jnz(ky_loop).map_err(asm_err)?;
        }
        // Add C when accumulating, then the epilogue when finishing, then store the tile.
        x.set_label(&mut store).map_err(asm_err)?;
        let mut overwrite = x.create_label();
        x.test(r9, 1).map_err(asm_err)?;
        x.jz(overwrite).map_err(asm_err)?;
        x.mov(rax, rdx).map_err(asm_err)?;
        for r in 0..rows {
            for v in 0..vecs {
                ops.add_mem(&mut x, 2 * r + v, rax + vb * v as i32)?;
            }
            x.add(rax, rcx).map_err(asm_err)?;
        }
        x.set_label(&mut overwrite).map_err(asm_err)?;
        if let Some(epi) = &self.epilogue {
            let mut done = x.create_label();
            x.test(r9, 2).map_err(asm_err)?;
            x.jz(done).map_err(asm_err)?;
            // The registers that fed the loop are free now: one for the bias, one per bound.
            let tmp = nacc;
            if epi.bias {
                x.mov(rax, qword_ptr(rsp + 8)).map_err(asm_err)?;
                for r in 0..rows {
                    ops.broadcast(&mut x, tmp, rax + 4 * r as i32)?;
                    for v in 0..vecs {
                        ops.add_reg(&mut x, 2 * r + v, tmp)?;
                    }
                }
            }
            for act in &epi.acts {
                let (bits, max) = match act.bound() {
                    Some(b) => b,
                    None => {
                        // The residual tile, laid out like C (row stride rcx). Every element is
                        // read before any store, so it may be C itself.
                        x.mov(rax, qword_ptr(rsp + 16)).map_err(asm_err)?;
                        for r in 0..rows {
                            for v in 0..vecs {
                                ops.add_mem(&mut x, 2 * r + v, rax + vb * v as i32)?;
                            }
                            x.add(rax, rcx).map_err(asm_err)?;
                        }
                        continue;
                    }
                };
                ops.splat_bits(&mut x, tmp, bits)?;
                for r in 0..rows {
                    for v in 0..vecs {
                        ops.bound(&mut x, 2 * r + v, tmp, max)?;
                    }
                }
            }
            x.set_label(&mut done).map_err(asm_err)?;
        }
        for r in 0..rows {
            for v in 0..vecs {
                ops.store(&mut x, rdx + vb * v as i32, 2 * r + v)?;
            }
            x.add(rdx, rcx).map_err(asm_err)?;
        }
        x.vzeroupper().map_err(asm_err)?;
        x.ret().map_err(asm_err)?;
        x.assemble(0).map_err(asm_err)
    }
}

/// The handful of vector instructions the microkernel uses, on ymm (VEX) or zmm (EVEX)
/// registers by number.
pub(super) struct Ops {
    pub(super) wide: bool,
}

pub(super) const YMM: [AsmRegisterYmm; 16] =
    [ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13, ymm14, ymm15];
pub(super) const ZMM: [AsmRegisterZmm; 32] = [
    zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13, zmm14, zmm15, zmm16, zmm17,
    zmm18, zmm19, zmm20, zmm21, zmm22, zmm23, zmm24, zmm25, zmm26, zmm27, zmm28, zmm29, zmm30, zmm31,
];

impl Ops {
    /// Zeroes a register. On zmm, `vpxord` (AVX-512F): the float form `vxorps zmm` is
    /// AVX-512DQ, which the plan does not require (Xeon Phi has F without DQ).
    pub(super) fn zero(&self, x: &mut CodeAssembler, r: usize) -> Result<(), CodegenError> {
        if self.wide { x.vpxord(ZMM[r], ZMM[r], ZMM[r]) } else { x.vxorps(YMM[r], YMM[r], YMM[r]) }.map_err(asm_err)
    }
    pub(super) fn load(&self, x: &mut CodeAssembler, r: usize, m: AsmMemoryOperand) -> Result<(), CodegenError> {
        if self.wide { x.vmovups(ZMM[r], zmmword_ptr(m)) } else { x.vmovups(YMM[r], ymmword_ptr(m)) }.map_err(asm_err)
    }
    pub(super) fn store(&self, x: &mut CodeAssembler, m: AsmMemoryOperand, r: usize) -> Result<(), CodegenError> {
        if self.wide { x.vmovups(zmmword_ptr(m), ZMM[r]) } else { x.vmovups(ymmword_ptr(m), YMM[r]) }.map_err(asm_err)
    }
    pub(super) fn broadcast(&self, x: &mut CodeAssembler, r: usize, m: AsmMemoryOperand) -> Result<(), CodegenError> {
        if self.wide { x.vbroadcastss(ZMM[r], dword_ptr(m)) } else { x.vbroadcastss(YMM[r], dword_ptr(m)) }
            .map_err(asm_err)
    }
    pub(super) fn fma(&self, x: &mut CodeAssembler, acc: usize, b: usize, s: usize) -> Result<(), CodegenError> {
        if self.wide { x.vfmadd231ps(ZMM[acc], ZMM[b], ZMM[s]) } else { x.vfmadd231ps(YMM[acc], YMM[b], YMM[s]) }
            .map_err(asm_err)
    }
    /// `acc += b . s` over bf16 pairs (VDPBF16PS, zmm only).
    pub(super) fn dot_bf16(&self, x: &mut CodeAssembler, acc: usize, b: usize, s: usize) -> Result<(), CodegenError> {
        assert!(self.wide, "VDPBF16PS is used on zmm registers only");
        x.vdpbf16ps(ZMM[acc], ZMM[b], ZMM[s]).map_err(asm_err)
    }
    pub(super) fn add_reg(&self, x: &mut CodeAssembler, r: usize, s: usize) -> Result<(), CodegenError> {
        if self.wide { x.vaddps(ZMM[r], ZMM[r], ZMM[s]) } else { x.vaddps(YMM[r], YMM[r], YMM[s]) }.map_err(asm_err)
    }
    /// `r = max ? (b > r ? b : r) : (b < r ? b : r)`: vmaxps/vminps with the bound first, which
    /// returns the second operand (r) when either is NaN and for equal zeros.
    pub(super) fn bound(&self, x: &mut CodeAssembler, r: usize, b: usize, max: bool) -> Result<(), CodegenError> {
        match (self.wide, max) {
            (true, true) => x.vmaxps(ZMM[r], ZMM[b], ZMM[r]),
            (true, false) => x.vminps(ZMM[r], ZMM[b], ZMM[r]),
            (false, true) => x.vmaxps(YMM[r], YMM[b], YMM[r]),
            (false, false) => x.vminps(YMM[r], YMM[b], YMM[r]),
        }
        .map_err(asm_err)
    }
    /// Every lane of register r = the f32 with these bits, through the red zone below rsp (the
    /// microkernel is a leaf; the code holds no data).
    pub(super) fn splat_bits(&self, x: &mut CodeAssembler, r: usize, bits: u32) -> Result<(), CodegenError> {
        x.mov(dword_ptr(rsp - 8), bits).map_err(asm_err)?;
        self.broadcast(x, r, rsp - 8)
    }
    pub(super) fn add_mem(&self, x: &mut CodeAssembler, r: usize, m: AsmMemoryOperand) -> Result<(), CodegenError> {
        if self.wide { x.vaddps(ZMM[r], ZMM[r], zmmword_ptr(m)) } else { x.vaddps(YMM[r], YMM[r], ymmword_ptr(m)) }
            .map_err(asm_err)
    }
}

impl KernelSpec for WideMicrokernel {
    fn name(&self) -> String {
        let b = self.b_row_bytes.map(|b| format!(" ldb {b}")).unwrap_or_default();
        let tier = if self.bf16 { "avx512bf16" } else { self.tier.name() };
        let taps = self.taps.map(|t| format!(" taps {}x{}x{}", t.kh, t.kw, t.pairs)).unwrap_or_default();
        format!("{tier} microkernel {}x{}{b}{taps}", self.rows, self.cols)
    }

    fn emit(&self, _: &mut super::builder::Kb) {
        unreachable!("a wide microkernel is machine code (machine_code), not CLIF")
    }

    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
}

/// An FMA peak probe: `iterations` rounds of independent `vfmadd231ps` chains (12 on ymm for
/// AVX2, 24 on zmm for AVX-512), as `extern "sysv64" fn(out: *mut f32, iterations: usize)`
/// storing the sum of the chains (8 or 16 floats).
#[derive(Clone, Debug)]
pub struct FmaLoop {
    pub tier: Tier,
    /// VDPBF16PS chains instead (AVX-512 only): two multiply-adds per lane.
    pub bf16: bool,
}

impl FmaLoop {
    /// Independent chains: two FMA ports x latency 4, with margin.
    pub fn chains(&self) -> usize {
        if self.tier == Tier::Avx512 { 24 } else { 12 }
    }
    /// Floats per vector.
    pub fn lanes(&self) -> usize {
        if self.tier == Tier::Avx512 { 16 } else { 8 }
    }
    /// Flops of one instruction of a chain.
    pub fn flops_per_instruction(&self) -> usize {
        self.lanes() * if self.bf16 { 4 } else { 2 }
    }

    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        let ops = Ops { wide: self.tier == Tier::Avx512 };
        let n = self.chains();
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        for r in 0..n + 2 {
            ops.zero(&mut x, r)?;
        }
        let mut top = x.create_label();
        x.set_label(&mut top).map_err(asm_err)?;
        for r in 0..n {
            if self.bf16 {
                ops.dot_bf16(&mut x, r, n, n + 1)?;
            } else {
                ops.fma(&mut x, r, n, n + 1)?;
            }
        }
        x.dec(rsi).map_err(asm_err)?;
        x.jnz(top).map_err(asm_err)?;
        for r in 1..n {
            if ops.wide { x.vaddps(zmm0, zmm0, ZMM[r]) } else { x.vaddps(ymm0, ymm0, YMM[r]) }.map_err(asm_err)?;
        }
        ops.store(&mut x, rdi + 0, 0)?;
        x.vzeroupper().map_err(asm_err)?;
        x.ret().map_err(asm_err)?;
        x.assemble(0).map_err(asm_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use incept_runtime::code::ExecutableCode;

    type Ukernel =
        unsafe extern "sysv64" fn(*const f32, *const f32, *mut f32, usize, usize, usize, *const f32, *const f32);

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = incept_ir::text::parse::SplitMix(seed);
        (0..n).map(|_| s.uniform() as f32).collect()
    }

    /// The epilogues the tests give the kernels: bias, then x < -0.5 ? -0.5 : x, ReLU, and
    /// 0.75 < x ? 0.75 : x, as the Cranelift epilogue computes them; or, without a bias, a
    /// residual and ReLU.
    fn residual_epilogue() -> WideEpilogue {
        WideEpilogue { bias: false, acts: vec![WideAct::Add, WideAct::Relu] }
    }

    fn test_epilogue() -> WideEpilogue {
        WideEpilogue {
            bias: true,
            acts: vec![WideAct::Max((-0.5f32).to_bits()), WideAct::Relu, WideAct::Min(0.75f32.to_bits())],
        }
    }

    fn finish(x: f32, bias: f32) -> f32 {
        let x = x + bias;
        let x = if x < -0.5 { -0.5 } else { x };
        let x = if x < 0.0 { 0.0 } else { x };
        if 0.75 < x { 0.75 } else { x }
    }

    /// Every row count, K counts around the unroll factor, every flag (accumulate, finish),
    /// with and without an epilogue, B packed and read in place with a wider row stride, into a C with a row stride wider than the tile that holds
    /// a NaN and a -0 (which accumulation carries into the epilogue): the microkernel against a
    /// plain product, for each wide tier this CPU runs.
    #[test]
    fn wide_microkernels_match_a_plain_product() {
        let tiers = host_wide_tiers();
        if tiers.len() < 2 {
            println!("skipped for the tiers this CPU lacks (has: {tiers:?})");
        }
        for tier in tiers {
            let (mr, nr) = (tier.panel_rows(1), tier.nr());
            for (rows, cols) in (1..=mr).flat_map(|r| [(r, nr / 2), (r, nr)]) {
                // B packed (NR floats per K step) or read in place with a wider row stride.
                let layouts = [None, Some(nr + 7)];
                for (epilogue, ldb) in [None, Some(test_epilogue()), Some(residual_epilogue())]
                    .into_iter()
                    .flat_map(|e| layouts.map(|l| (e.clone(), l)))
                {
                    let with_epilogue = epilogue.is_some();
                    let residual_kind = epilogue.as_ref().is_some_and(|e| e.acts.contains(&WideAct::Add));
                    let b_row_bytes = ldb.map(|l| (l * 4) as i32);
                    let ldb = ldb.unwrap_or(nr);
                    let code = WideMicrokernel { tier, rows, cols, epilogue, b_row_bytes, bf16: false, taps: None }
                        .assemble()
                        .expect("assemble");
                    let exec = ExecutableCode::new(&code).expect("map");
                    // SAFETY: the code is a function with the documented signature.
                    let f: Ukernel = unsafe { std::mem::transmute(exec.address(0).expect("address")) };
                    for kc in [1, 2, 3, 4, 5, 7, 8, 9, 17, 64, 255] {
                        for flags in 0..4usize {
                            let a = values(kc * mr, 1 + kc as u64);
                            let b = values(kc * ldb, 2 + kc as u64);
                            let bias: Vec<f32> = values(mr, 4).iter().map(|v| v - 0.5).collect();
                            let ldc = nr + 4;
                            let mut c0 = values((mr + 2) * ldc, 3);
                            c0[1] = f32::NAN;
                            c0[ldc + 2] = -0.0;
                            let mut c = c0.clone();
                            let res: Vec<f32> = values((mr + 2) * ldc, 5).iter().map(|v| v - 0.5).collect();
                            // SAFETY: the panels hold kc steps, C holds `rows` rows of `ldc`
                            // floats, the bias `rows` floats.
                            unsafe {
                                f(
                                    a.as_ptr(),
                                    b.as_ptr(),
                                    c.as_mut_ptr(),
                                    ldc * 4,
                                    kc,
                                    flags,
                                    bias.as_ptr(),
                                    res.as_ptr(),
                                )
                            };
                            for r in 0..mr + 2 {
                                for j in 0..ldc {
                                    let want = if r < rows && j < cols {
                                        let dot: f32 = (0..kc).map(|k| a[k * mr + r] * b[k * ldb + j]).sum();
                                        let v = dot + if flags & 1 == 1 { c0[r * ldc + j] } else { 0.0 };
                                        let finishing = with_epilogue && flags & 2 == 2;
                                        if finishing && residual_kind {
                                            let x = v + res[r * ldc + j];
                                            if x < 0.0 { 0.0 } else { x }
                                        } else if finishing {
                                            finish(v, bias[r])
                                        } else {
                                            v
                                        }
                                    } else {
                                        c0[r * ldc + j]
                                    };
                                    let got = c[r * ldc + j];
                                    assert!(
                                        (got - want).abs() <= 1e-4 * (1.0 + want.abs())
                                            || (got.is_nan() && want.is_nan()),
                                        "{tier:?} {rows}x{cols} epilogue {with_epilogue} kc {kc} flags {flags}: C[{r}][{j}] = {got}, want {want}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
