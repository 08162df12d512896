//! int8 GEMMs on AVX512-VNNI: the operand layouts and the register tile that multiplies
//! unsigned activations by signed weights into exact i32 sums and requantises them.
//!
//! VPDPBUSD adds to each i32 lane the four products of four unsigned bytes of its first source
//! by four signed bytes of its second, without saturation (four products of at most 255 x 128
//! fit easily), so the sums are exact and wrap only as i32 arithmetic does. The tile mirrors the
//! bf16 one (`bf16.rs`), four k per lane instead of two:
//! - A, the weights (s8, constant), is packed at compile time in quads: panel p, quad q, row r
//!   holds `A[12p + r][4q .. 4q + 4]` as one dword, broadcast by the instruction itself
//!   (`{1to16}`), zero past K and past the last row ([`quad_a_offset`]).
//! - B, the activations (u8; s8 ones shifted by 128), comes as quad panels: quad row q holds, for
//!   each of the panel's 32 columns, the four bytes `B[4q .. 4q + 4][c]` (128 bytes a row).
//! - The zero points fold into a per-row i32 bias: with weights of zero point 0, `sum (x - zx) w
//!   = sum x' w - (zx + shift) sum w`, where x' is the unsigned byte the tile multiplied.
//! - The epilogue adds the bias, converts to f32, multiplies by the row's multiplier, clamps to
//!   the output range less the zero point (NaN giving the low end), rounds half to even
//!   (VCVTPS2DQ under the default MXCSR), adds the zero point and stores bytes: the reference's
//!   `requantize` exactly.

use iced_x86::code_asm::*;

use super::CodegenError;
use super::int8_columns::{MAX_COLUMNS, VnniColumns};
pub use super::int8_layout::{Int8Out, MR_INT8, QUAD_ROW_BYTES, QuadRowsKernel, pack_quad_a, quad_a_offset};
use super::int8_planes::{PlanesWalk, planes_walk};
use super::kernels::conv::Geom;
use super::wide::{ZMM, asm_err};

/// Whether this CPU runs the VNNI tile (AVX-512 F and BW, and AVX512-VNNI).
pub fn host_has_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// The instruction set of the int8 tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Isa {
    /// 512-bit VPDPBUSD (AVX512-VNNI; 12 rows by 32 columns in registers).
    Avx512Vnni,
    /// 256-bit VEX VPDPBUSD (AVX-VNNI; `int8_avx2.rs`).
    AvxVnni,
    /// 256-bit VPMADDWD on 16-bit halves (AVX2 alone; `int8_avx2.rs`): A packed as pairs.
    Avx2,
}

impl Int8Isa {
    pub fn name(self) -> &'static str {
        match self {
            Int8Isa::Avx512Vnni => "avx512vnni",
            Int8Isa::AvxVnni => "avxvnni",
            Int8Isa::Avx2 => "avx2",
        }
    }
    /// The CPU features its code needs.
    pub fn features(self) -> &'static [&'static str] {
        match self {
            Int8Isa::Avx512Vnni => &["avx512bw", "avx512vnni"],
            Int8Isa::AvxVnni => &["avx2", "avxvnni"],
            Int8Isa::Avx2 => &["avx2"],
        }
    }
    /// Whether this CPU runs it.
    pub fn on_host(self) -> bool {
        match self {
            Int8Isa::Avx512Vnni => host_has_vnni(),
            Int8Isa::AvxVnni => {
                std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("avxvnni")
            }
            Int8Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
        }
    }
    /// A's packed panels for this tile, from rows of s8 weights.
    pub fn pack_a(self, w: &[i8], rows: usize, k: usize) -> Vec<u8> {
        match self {
            Int8Isa::Avx2 => super::int8_layout::pack_pair_a(w, rows, k),
            _ => pack_quad_a(w, rows, k).iter().map(|&v| v as u8).collect(),
        }
    }
}

/// The register tile: `rows` (1..=12) x `cols` (16 or 32) outputs, of which the first
/// `valid` columns are stored (masked stores: a narrow last panel writes C directly).
///
/// `extern "sysv64" fn(a: *const i8, b: *const u8, c: *mut u8, ldc: usize, quads: usize,
/// bias: *const i32, mult: *const f32, consts: *const f32)`: `quads` quad steps of K; `bias`
/// and `mult` per row (bias also for `Sums`; `mult` and `consts` unused there); `consts` holds
/// the low and high output bound less the zero point (f32) and the zero point (i32 bits).
#[derive(Clone, Debug)]
pub struct VnniMicrokernel {
    pub rows: usize,
    pub cols: usize,
    pub valid: usize,
    pub out: Int8Out,
    pub isa: Int8Isa,
    /// B in quad planes (the implicit GEMM, `int8_planes.rs`) instead of a packed panel; the
    /// `quads` argument is then unused (the walk knows K). AVX512-VNNI only.
    pub walk: Option<PlanesWalk>,
}

impl VnniMicrokernel {
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        if self.isa != Int8Isa::Avx512Vnni {
            assert!(self.walk.is_none(), "quad planes are the 512-bit tile's");
            // The 256-bit tiles always cover a panel's 32 columns, storing the valid ones.
            return super::int8_avx2::assemble(self.rows, self.valid, self.out, self.isa == Int8Isa::AvxVnni);
        }
        let rows = self.rows;
        assert!((1..=MR_INT8).contains(&rows), "an int8 tile has 1 to {MR_INT8} rows");
        assert!(self.cols == 16 || self.cols == 32, "an int8 tile has 16 or 32 columns");
        assert!((1..=self.cols).contains(&self.valid), "an int8 tile stores 1 to {} columns", self.cols);
        let vecs = self.cols / 16;
        // Lanes stored per vector; k1 / k2 mask the first / second vector's where short.
        let lanes = |v: usize| self.valid.saturating_sub(16 * v).min(16);
        let a_step = (MR_INT8 * 4) as i32;
        let b_step = QUAD_ROW_BYTES as i32;
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        let acc = |r: usize, v: usize| ZMM[2 * r + v];
        let (b0, b1) = (ZMM[24], ZMM[25]);
        // The sums start at the row's bias (one load and a copy instead of two adds at the end).
        for r in 0..rows {
            x.vpbroadcastd(acc(r, 0), dword_ptr(r9 + 4 * r as i32)).map_err(asm_err)?;
            if vecs == 2 {
                x.vmovdqa32(acc(r, 1), acc(r, 0)).map_err(asm_err)?;
            }
        }
        // One quad step: B's columns at rsi + db, or (`shift` > 0) `shift` dwords past there,
        // put together from aligned loads by VALIGND (a load across two cache lines costs
        // more: quad planes' taps sit 4 bytes apart).
        let step_at = |x: &mut CodeAssembler, da: i32, db: i32, shift: u32| -> Result<(), CodegenError> {
            if shift == 0 {
                x.vmovdqu8(b0, zmmword_ptr(rsi + db)).map_err(asm_err)?;
                if vecs == 2 {
                    x.vmovdqu8(b1, zmmword_ptr(rsi + db + 64)).map_err(asm_err)?;
                }
            } else {
                let b2 = ZMM[26];
                x.vmovdqa32(b0, zmmword_ptr(rsi + db)).map_err(asm_err)?;
                x.vmovdqa32(b1, zmmword_ptr(rsi + db + 64)).map_err(asm_err)?;
                if vecs == 2 {
                    x.vmovdqa32(b2, zmmword_ptr(rsi + db + 128)).map_err(asm_err)?;
                }
                x.valignd(b0, b1, b0, shift).map_err(asm_err)?;
                if vecs == 2 {
                    x.valignd(b1, b2, b1, shift).map_err(asm_err)?;
                }
            }
            for r in 0..rows {
                for (v, b) in [b0, b1].into_iter().enumerate().take(vecs) {
                    x.vpdpbusd(acc(r, v), b, dword_bcst(rdi + da + 4 * r as i32)).map_err(asm_err)?;
                }
            }
            Ok(())
        };
        let step = |x: &mut CodeAssembler, da: i32, db: i32| step_at(x, da, db, 0);
        let mut store = x.create_label();
        match self.walk {
            None => {
                let (mut main, mut tail, mut tail_loop) = (x.create_label(), x.create_label(), x.create_label());
                x.cmp(r8, 4).map_err(asm_err)?;
                x.jb(tail).map_err(asm_err)?;
                x.set_label(&mut main).map_err(asm_err)?;
                // Both panels prefetched 48 quad steps ahead (B 6 KB, A 2.3 KB): measured on ResNet50's
                // QOperator convs against 16 steps (the first choice), 3-5% faster at one thread; 32 and
                // 64 steps within the noise of 48.
                const AHEAD: i32 = 48;
                for u in 0..4 {
                    x.prefetcht0(byte_ptr(rsi + AHEAD * b_step + u * b_step)).map_err(asm_err)?;
                    x.prefetcht0(byte_ptr(rsi + AHEAD * b_step + u * b_step + 64)).map_err(asm_err)?;
                    if u * 64 < 4 * a_step {
                        x.prefetcht0(byte_ptr(rdi + AHEAD * a_step + u * 64)).map_err(asm_err)?;
                    }
                    step(&mut x, u * a_step, u * b_step)?;
                }
                x.add(rdi, 4 * a_step).map_err(asm_err)?;
                x.add(rsi, 4 * b_step).map_err(asm_err)?;
                x.sub(r8, 4).map_err(asm_err)?;
                x.cmp(r8, 4).map_err(asm_err)?;
                x.jae(main).map_err(asm_err)?;
                x.set_label(&mut tail).map_err(asm_err)?;
                x.test(r8, r8).map_err(asm_err)?;
                x.jz(store).map_err(asm_err)?;
                x.set_label(&mut tail_loop).map_err(asm_err)?;
                step(&mut x, 0, 0)?;
                x.add(rdi, a_step).map_err(asm_err)?;
                x.add(rsi, b_step).map_err(asm_err)?;
                x.dec(r8).map_err(asm_err)?;
                x.jnz(tail_loop).map_err(asm_err)?;
            }
            Some(w) => planes_walk(&mut x, &w, a_step, step_at)?,
        }
        x.set_label(&mut store).map_err(asm_err)?;
        for (v, k) in [k1, k2].into_iter().enumerate().take(vecs) {
            if lanes(v) > 0 && lanes(v) < 16 {
                x.mov(eax, (1u32 << lanes(v)) - 1).map_err(asm_err)?;
                x.kmovw(k, eax).map_err(asm_err)?;
            }
        }
        match self.out {
            Int8Out::Sums => {
                for r in 0..rows {
                    for v in (0..vecs).filter(|&v| lanes(v) > 0) {
                        let at = zmmword_ptr(rdx + 64 * v as i32);
                        let at = if lanes(v) < 16 { if v == 0 { at.k1() } else { at.k2() } } else { at };
                        x.vmovdqu32(at, acc(r, v)).map_err(asm_err)?;
                    }
                    x.add(rdx, rcx).map_err(asm_err)?;
                }
            }
            Int8Out::Requant { .. } => {
                let (lo, hi, zp) = (ZMM[26], ZMM[27], ZMM[28]);
                x.mov(rax, qword_ptr(rsp + 16)).map_err(asm_err)?;
                x.vbroadcastss(lo, dword_ptr(rax)).map_err(asm_err)?;
                x.vbroadcastss(hi, dword_ptr(rax + 4)).map_err(asm_err)?;
                x.vpbroadcastd(zp, dword_ptr(rax + 8)).map_err(asm_err)?;
                x.mov(rax, qword_ptr(rsp + 8)).map_err(asm_err)?;
                for r in 0..rows {
                    let mult = ZMM[29];
                    x.vbroadcastss(mult, dword_ptr(rax + 4 * r as i32)).map_err(asm_err)?;
                    for v in (0..vecs).filter(|&v| lanes(v) > 0) {
                        let a = acc(r, v);
                        super::int8_arith::requantize(&mut x, a, [mult, lo, hi, zp])?;
                        // In range now: keeping the low byte is the conversion.
                        let at = xmmword_ptr(rdx + 16 * v as i32);
                        let at = if lanes(v) < 16 { if v == 0 { at.k1() } else { at.k2() } } else { at };
                        x.vpmovdb(at, a).map_err(asm_err)?;
                    }
                    x.add(rdx, rcx).map_err(asm_err)?;
                }
            }
        }
        x.vzeroupper().map_err(asm_err)?;
        x.ret().map_err(asm_err)?;
        x.assemble(0).map_err(asm_err)
    }
}

#[cfg(test)]
mod tests {
    use incept_ir::DType;
    use incept_ir::ops::quant::{qrange, requantize};
    use incept_runtime::code::ExecutableCode;

    use super::*;

    type Tile =
        unsafe extern "sysv64" fn(*const i8, *const u8, *mut u8, usize, usize, *const i32, *const f32, *const f32);

    const ISAS: [Int8Isa; 3] = [Int8Isa::Avx512Vnni, Int8Isa::AvxVnni, Int8Isa::Avx2];

    /// Every tile this CPU runs: every row count, both widths (the 512-bit tile's), short
    /// stores, K around the quad and unroll steps, both output forms and signs, against exact
    /// i32 sums and the reference's `requantize`: equal, byte for byte, and nothing written
    /// outside the tile.
    #[test]
    fn int8_tiles_match_exact_sums_and_the_reference_requantisation() {
        let mut ran = 0;
        for isa in ISAS {
            if !isa.on_host() {
                println!("skipped {}: not on this CPU", isa.name());
                continue;
            }
            ran += tile_cases(isa);
        }
        assert!(ran > 0 || !std::arch::is_x86_feature_detected!("avx2"), "no int8 tile ran");
    }

    /// The 256-bit tiles hold only VEX encodings (an EVEX form would fault on AVX2 CPUs).
    #[test]
    fn int8_tiles_of_256_bits_are_vex_only() {
        use iced_x86::{Decoder, DecoderOptions, EncodingKind};
        for isa in [Int8Isa::AvxVnni, Int8Isa::Avx2] {
            for out in [Int8Out::Sums, Int8Out::Requant { signed: true }] {
                let code = VnniMicrokernel { rows: 7, cols: 32, valid: 19, out, isa, walk: None }
                    .assemble()
                    .expect("assemble");
                let mut d = Decoder::new(64, &code, DecoderOptions::NONE);
                while d.can_decode() {
                    let i = d.decode();
                    assert!(!i.is_invalid(), "{}: undecodable bytes", isa.name());
                    assert_ne!(i.encoding(), EncodingKind::EVEX, "{}: {:?} is EVEX", isa.name(), i.mnemonic());
                }
            }
        }
    }

    fn tile_cases(isa: Int8Isa) -> usize {
        let mut cases = 0;
        let mut s = incept_ir::text::parse::SplitMix(7);
        // Every row count by both widths, and short stores: 1, 5, 16 of 16 and 1, 16, 17, 31 of
        // 32 (the 256-bit tiles: 32 columns, short stores inside and across their vectors).
        let shapes: Vec<(usize, usize, usize)> = if isa == Int8Isa::Avx512Vnni {
            (1..=MR_INT8)
                .flat_map(|r| [(r, 16, 16), (r, 32, 32)])
                .chain([(12, 16, 1), (5, 16, 5), (12, 32, 1), (7, 32, 16), (12, 32, 17), (3, 32, 31)])
                .collect()
        } else {
            (1..=MR_INT8)
                .map(|r| (r, 32, 32))
                .chain([(12, 32, 1), (5, 32, 7), (7, 32, 8), (2, 32, 9), (12, 32, 17), (3, 32, 31)])
                .collect()
        };
        for (rows, cols, valid) in shapes {
            for out in [Int8Out::Sums, Int8Out::Requant { signed: false }, Int8Out::Requant { signed: true }] {
                cases += 1;
                let code = VnniMicrokernel { rows, cols, valid, out, isa, walk: None }.assemble().expect("assemble");
                let exec = ExecutableCode::new(&code).expect("map");
                // SAFETY: the code is a function with the documented signature.
                let f: Tile = unsafe { std::mem::transmute(exec.address(0).expect("address")) };
                for k in [1usize, 3, 4, 5, 15, 16, 17, 33, 64, 130] {
                    let a: Vec<i8> = (0..MR_INT8 * k).map(|_| (s.next_u64() % 256) as u8 as i8).collect();
                    let b: Vec<u8> = (0..k * 32).map(|_| (s.next_u64() % 256) as u8).collect();
                    let pa = isa.pack_a(&a, MR_INT8, k);
                    let quads = k.div_ceil(4);
                    let mut pb = vec![0u8; quads * QUAD_ROW_BYTES];
                    for kk in 0..k {
                        for c in 0..32 {
                            pb[(kk / 4) * QUAD_ROW_BYTES + c * 4 + kk % 4] = b[kk * 32 + c];
                        }
                    }
                    let bias: Vec<i32> = (0..MR_INT8).map(|r| (r as i32 - 6) * 1000).collect();
                    // Multipliers from tiny to large, so that rows both saturate and do not.
                    let mult: Vec<f32> = (0..MR_INT8).map(|r| 1.5e-5 * 4f32.powi(r as i32 % 8)).collect();
                    let (dtype, zp) = match out {
                        Int8Out::Requant { signed: true } => (DType::I8, -3),
                        _ => (DType::U8, 121),
                    };
                    let (lo, hi) = qrange(dtype).expect("range");
                    let consts = [(lo - zp) as f32, (hi - zp) as f32, f32::from_bits(zp as u32)];
                    let elem = if out == Int8Out::Sums { 4 } else { 1 };
                    let ldc = (cols + 5) * elem;
                    let before = vec![0xA5u8; (MR_INT8 + 1) * ldc];
                    let mut c = before.clone();
                    // SAFETY: the panels hold the padded K; C has MR + 1 rows of ldc bytes.
                    unsafe {
                        f(
                            pa.as_ptr().cast(),
                            pb.as_ptr(),
                            c.as_mut_ptr(),
                            ldc,
                            quads,
                            bias.as_ptr(),
                            mult.as_ptr(),
                            consts.as_ptr(),
                        )
                    };
                    for r in 0..=MR_INT8 {
                        for j in 0..ldc / elem {
                            let at = r * ldc + j * elem;
                            if r >= rows || j >= valid {
                                assert_eq!(
                                    c[at..at + elem],
                                    before[at..at + elem],
                                    "{} {rows}x{cols} ({valid} stored) {out:?}: C[{r}][{j}] written",
                                    isa.name()
                                );
                                continue;
                            }
                            let sum = (0..k).fold(bias[r], |acc, kk| {
                                acc.wrapping_add(a[r * k + kk] as i32 * b[kk * 32 + j] as i32)
                            });
                            match out {
                                Int8Out::Sums => {
                                    let got = i32::from_le_bytes(c[at..at + 4].try_into().expect("4 bytes"));
                                    assert_eq!(got, sum, "{} {rows}x{cols} k {k}: C[{r}][{j}]", isa.name());
                                }
                                Int8Out::Requant { signed } => {
                                    let want = requantize(sum, mult[r], zp, (lo, hi));
                                    let got = if signed { c[at] as i8 as i32 } else { c[at] as i32 };
                                    assert_eq!(
                                        got,
                                        want,
                                        "{} {rows}x{cols} k {k} {out:?}: C[{r}][{j}] (sum {sum})",
                                        isa.name()
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        cases
    }
}

/// The machine-code tile as a kernel spec (called by [`Int8GemmSpec`]).
impl super::KernelSpec for VnniMicrokernel {
    fn name(&self) -> String {
        let walk = match self.walk {
            Some(w) => format!(" over {} planes of {}x{} taps", w.planes, w.kh, w.kw),
            None => String::new(),
        };
        format!(
            "{} int8 microkernel {}x{} ({} stored) {:?}{walk}",
            self.isa.name(),
            self.rows,
            self.cols,
            self.valid,
            self.out
        )
    }
    fn emit(&self, _: &mut super::builder::Kb) {
        unreachable!("the VNNI tile is machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
    fn features(&self) -> &'static [&'static str] {
        self.isa.features()
    }
}

/// A conv's input as quad panels (im2col in quads): for image i, column panel p (32 output
/// positions) and quad q of K (`c_in * kh * kw`, channel-major then window), the 128 bytes at
/// `((i * panels + p) * quads + q) * 128` hold, for each column c, the four bytes of k = 4q ..
/// 4q + 4 at output position 32p + c: the input byte (its top bit flipped for i8, so the tile
/// multiplies it as u8), or `fill` (the flipped zero point: zero after the bias's correction)
/// in the padding, past K and past the last position. Operands: X, panels. One tile per
/// (image, panel).
#[derive(Clone, Debug)]
pub struct QuadIm2colSpec {
    pub n: usize,
    pub c: usize,
    pub g: Geom,
    pub flip: bool,
    pub fill: u8,
    /// Whether whole quads of a pointwise conv's panels interleave in AVX2 machine code
    /// ([`QuadRowsKernel`]); else in 128-bit CLIF.
    pub avx2: bool,
}

impl QuadIm2colSpec {
    pub fn k(&self) -> usize {
        self.c * self.g.kh * self.g.kw
    }
    pub fn quads(&self) -> usize {
        self.k().div_ceil(4)
    }
    pub fn panels(&self) -> usize {
        (self.g.oh * self.g.ow).div_ceil(32)
    }
    /// Bytes of one image's panels.
    pub fn image_bytes(&self) -> usize {
        self.panels() * self.quads() * QUAD_ROW_BYTES
    }
    pub fn tiles(&self) -> usize {
        self.n * self.panels()
    }
    /// A 1x1 conv at stride 1 without padding: each k is a channel plane read in place.
    fn pointwise(&self) -> bool {
        (self.g.kh, self.g.kw, self.g.sh, self.g.sw, self.g.ph, self.g.pw) == (1, 1, 1, 1, 0, 0)
    }
    /// Quads interleaved by vectors in a full panel and in the last, partial one (see `emit`).
    fn vector_quads(&self) -> (usize, usize) {
        let npos = self.g.oh * self.g.ow;
        let vector_quads = if self.pointwise() { self.c / 4 } else { 0 };
        // The last, partial panel reads past its rows' ends into the next rows (its columns
        // past the positions are never stored), so only rows whose 32 bytes stay inside the
        // tensor: row r ends its read by (r + 1) npos + 31.
        let last_row = self.c as i64 - 1 - 31u64.div_ceil(npos as u64) as i64;
        // Quads q with 4q + 3 <= last_row.
        let partial_quads = if npos.is_multiple_of(32) || last_row < 3 { 0 } else { ((last_row - 3) / 4 + 1) as usize };
        (vector_quads, partial_quads.min(vector_quads))
    }
    /// The machine-code interleaves it calls (full panels', then the partial one's), in
    /// operand order after Y.
    pub fn quad_kernels(&self) -> Vec<QuadRowsKernel> {
        if !self.avx2 {
            return vec![];
        }
        let (full, partial) = self.vector_quads();
        let plane = self.g.h * self.g.w;
        [full, partial]
            .into_iter()
            .filter(|&q| q > 0)
            .map(|quads| QuadRowsKernel { quads, plane, flip: self.flip })
            .collect()
    }

    /// The first `quads` quad rows of a full panel of a pointwise conv: channel rows 4q .. 4q + 4
    /// at `src` (32 positions each, `h * w` apart) interleaved byte by byte into 128 bytes at
    /// `dst + 128 q`.
    fn interleave_quads(
        &self,
        kb: &mut super::builder::Kb,
        src: cranelift_codegen::ir::Value,
        dst: cranelift_codegen::ir::Value,
        quads: usize,
    ) {
        use cranelift_codegen::ir::types::I8X16;
        use cranelift_codegen::ir::{ConstantData, InstBuilder};

        use super::builder::{ro, rw};
        let plane = (self.g.h * self.g.w) as i64;
        let mask = |kb: &mut super::builder::Kb, m: [u8; 16]| kb.b.func.dfg.immediates.push(ConstantData::from(&m[..]));
        // Bytes of a and b alternating (low or high halves), then 16-bit pairs of two such.
        let lo8: [u8; 16] = std::array::from_fn(|i| (i / 2 + 16 * (i % 2)) as u8);
        let hi8: [u8; 16] = std::array::from_fn(|i| (8 + i / 2 + 16 * (i % 2)) as u8);
        let lo16: [u8; 16] = std::array::from_fn(|i| ((i / 4) * 2 + i % 2 + 16 * ((i / 2) % 2)) as u8);
        let hi16: [u8; 16] = std::array::from_fn(|i| (8 + (i / 4) * 2 + i % 2 + 16 * ((i / 2) % 2)) as u8);
        let (m_lo8, m_hi8, m_lo16, m_hi16) = (mask(kb, lo8), mask(kb, hi8), mask(kb, lo16), mask(kb, hi16));
        let flip = self.flip.then(|| {
            let b = kb.b.ins().iconst(cranelift_codegen::ir::types::I8, 0x80);
            kb.b.ins().splat(I8X16, b)
        });
        kb.for_const(0, quads as i64, 1, |kb, q| {
            let base = kb.muli(q, 4 * plane);
            let row0 = kb.elem(src, base, 1);
            let out = {
                let o = kb.muli(q, QUAD_ROW_BYTES as i64);
                kb.elem(dst, o, 1)
            };
            for half in 0..2i32 {
                let r: Vec<_> = (0..4)
                    .map(|c| {
                        let v = kb.b.ins().load(I8X16, ro(), row0, (c * plane) as i32 + 16 * half);
                        match flip {
                            Some(f) => kb.b.ins().bxor(v, f),
                            None => v,
                        }
                    })
                    .collect();
                // (c0, c1) and (c2, c3) byte pairs, then the pairs of pairs: 16 positions x 4.
                let p01 = [kb.b.ins().shuffle(r[0], r[1], m_lo8), kb.b.ins().shuffle(r[0], r[1], m_hi8)];
                let p23 = [kb.b.ins().shuffle(r[2], r[3], m_lo8), kb.b.ins().shuffle(r[2], r[3], m_hi8)];
                for (h, (a, b)) in p01.into_iter().zip(p23).enumerate() {
                    let lo = kb.b.ins().shuffle(a, b, m_lo16);
                    let hi = kb.b.ins().shuffle(a, b, m_hi16);
                    let at = 64 * half + 32 * h as i32;
                    kb.b.ins().store(rw(), lo, out, at);
                    kb.b.ins().store(rw(), hi, out, at + 16);
                }
            }
        });
    }
}

impl super::KernelSpec for QuadIm2colSpec {
    fn name(&self) -> String {
        format!(
            "quad im2col {}x{} {}x{} s{}x{} c{}",
            self.g.kh, self.g.kw, self.g.oh, self.g.ow, self.g.sh, self.g.sw, self.c
        )
    }

    fn emit(&self, kb: &mut super::builder::Kb) {
        use cranelift_codegen::ir::InstBuilder;
        use cranelift_codegen::ir::condcodes::IntCC;
        use cranelift_codegen::ir::types::I8;

        use super::builder::{ro, rw};
        let [x, y] = [kb.operand(0), kb.operand(1)];
        let (k, quads, panels, npos) = (self.k(), self.quads(), self.panels(), self.g.oh * self.g.ow);
        let taps = self.g.kh * self.g.kw;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (img, p) = kb.divmod(t, panels as i64);
            let dst = {
                let o = kb.muli(t, (quads * QUAD_ROW_BYTES) as i64);
                kb.elem(y, o, 1)
            };
            let src = {
                let o = kb.muli(img, (self.c * self.g.h * self.g.w) as i64);
                kb.elem(x, o, 1)
            };
            let first = kb.muli(p, 32);
            // A pointwise conv's panels: four channel rows of 32 positions interleaved into a
            // quad row with byte shuffles (machine code where `avx2`), the channels past the
            // last whole quad below.
            let (vector_quads, partial_quads) = self.vector_quads();
            let machine = self.quad_kernels().len();
            let ci_from = if vector_quads > 0 {
                let full = kb.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, p, (npos / 32) as i64);
                let (vec_b, part_b, join) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
                kb.b.append_block_param(join, cranelift_codegen::ir::types::I64);
                kb.b.ins().brif(full, vec_b, &[], part_b, &[]);
                for (i, (block, n)) in [(vec_b, vector_quads), (part_b, partial_quads)].into_iter().enumerate() {
                    kb.b.switch_to_block(block);
                    if n > 0 {
                        let plane0 = kb.elem(src, first, 1);
                        if machine > 0 {
                            // Operands X, Y, then the kernels: the full panels', the partial one's.
                            let f = kb.operand(2 + i);
                            kb.call_code(f, &[plane0, dst]);
                        } else {
                            self.interleave_quads(kb, plane0, dst, n);
                        }
                    }
                    let from = kb.iconst((n * 4) as i64);
                    kb.b.ins().jump(join, &[from.into()]);
                }
                kb.b.switch_to_block(join);
                kb.b.block_params(join)[0]
            } else {
                kb.iconst(0)
            };
            // Column by column: its output position once, then every k of it in order.
            kb.for_const(0, 32, 1, |kb, col| {
                let pos = kb.add(first, col);
                let in_n = kb.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, pos, npos as i64);
                let (oy, ox) = kb.divmod(pos, self.g.ow as i64);
                let iy0 = {
                    let v = kb.muli(oy, self.g.sh as i64);
                    kb.addi(v, -(self.g.ph as i64))
                };
                let ix0 = {
                    let v = kb.muli(ox, self.g.sw as i64);
                    kb.addi(v, -(self.g.pw as i64))
                };
                let column = {
                    let o = kb.muli(col, 4);
                    kb.elem(dst, o, 1)
                };
                let fill = kb.b.ins().iconst(I8, self.fill as i64);
                // Byte k of the column sits at (k / 4) * 128 + k % 4.
                let store_k = |kb: &mut super::builder::Kb, kk: cranelift_codegen::ir::Value, v| {
                    let q = kb.b.ins().ushr_imm_u(kk, 2);
                    let q = kb.muli(q, QUAD_ROW_BYTES as i64);
                    let lane = kb.b.ins().band_imm_u(kk, 3);
                    let o = kb.add(q, lane);
                    let d = kb.elem(column, o, 1);
                    kb.b.ins().store(rw(), v, d, 0);
                };
                let c_end = kb.iconst(self.c as i64);
                kb.for_range(ci_from, c_end, 1, |kb, ci| {
                    let plane = {
                        let o = kb.muli(ci, (self.g.h * self.g.w) as i64);
                        kb.elem(src, o, 1)
                    };
                    let kbase = kb.muli(ci, taps as i64);
                    for ky in 0..self.g.kh {
                        let iy = kb.addi(iy0, (ky * self.g.dh) as i64);
                        let in_y = kb.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, iy, self.g.h as i64);
                        let in_y = kb.b.ins().band(in_y, in_n);
                        let row = kb.muli(iy, self.g.w as i64);
                        for kx in 0..self.g.kw {
                            let ix = kb.addi(ix0, (kx * self.g.dw) as i64);
                            let in_x = kb.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, ix, self.g.w as i64);
                            let inside = kb.b.ins().band(in_y, in_x);
                            let at = {
                                let r = kb.add(row, ix);
                                let zero = kb.iconst(0);
                                kb.b.ins().select(inside, r, zero)
                            };
                            let a = kb.elem(plane, at, 1);
                            let v = kb.b.ins().load(I8, ro(), a, 0);
                            let v = if self.flip { kb.b.ins().bxor_imm_u(v, 0x80) } else { v };
                            let v = kb.b.ins().select(inside, v, fill);
                            let kk = kb.addi(kbase, (ky * self.g.kw + kx) as i64);
                            store_k(kb, kk, v);
                        }
                    }
                });
                // K padded to whole quads.
                for kk in k..quads * 4 {
                    let kv = kb.iconst(kk as i64);
                    store_k(kb, kv, fill);
                }
            });
        });
    }
}

/// The int8 conv GEMM: for image i, column panel p and each 12-row panel r of the output
/// channels, the VNNI tile over the quad panel of (i, p) and r's weight panel, writing the
/// requantised bytes of C[i][12r ..][32p ..] (row stride `n` positions); a last panel narrower
/// than 32 goes through a stack tile and is copied out. Operands: A (packed weights), B (quad
/// panels), bias (i32 per row, padded to whole panels), multiplier (f32 per row, padded),
/// consts (see [`VnniMicrokernel`]), C, then the tiles: 12 rows, and `m % 12` rows if any.
///
/// One tile per (image, column panel), each running every row panel: the weights stream once
/// per column panel while its quad panel stays in cache. When the weights outweigh the quad
/// panels (`by_rows`: the deep layers' small maps, where the weights are megabytes and the
/// positions a few panels), one tile per (image, row panel) instead, each running every
/// column panel: the weights stream once.
#[derive(Clone, Debug)]
pub struct Int8GemmSpec {
    pub images: usize,
    pub m: usize,
    pub n: usize,
    pub quads: usize,
    /// Columns between rows of C (n, or the whole output's for a band of its columns).
    pub ldc: usize,
    pub signed: bool,
    pub by_rows: bool,
    pub isa: Int8Isa,
    /// B in quad planes (`int8_planes.rs`): column panel p starts 32 positions further into
    /// them, and the tiles walk the planes.
    pub walk: Option<PlanesWalk>,
}

impl Int8GemmSpec {
    pub fn panels(&self) -> usize {
        self.n.div_ceil(32)
    }
    fn row_panels(&self) -> usize {
        self.m.div_ceil(MR_INT8)
    }
    pub fn tiles(&self) -> usize {
        self.images * if self.by_rows { self.row_panels() } else { self.panels() }
    }
    /// Whether the weights (all row panels) outweigh an image's quad panels: then `by_rows`.
    pub fn weights_dominate(m: usize, n: usize, quads: usize) -> bool {
        let weights = m.div_ceil(MR_INT8) * MR_INT8 * quads * 4;
        let panels = n.div_ceil(32) * quads * QUAD_ROW_BYTES;
        weights > panels
    }
    /// The machine-code tiles it calls, in operand order: full and short row panels by 32
    /// columns, then, where the last column panel has at most 16 columns, the same by 16 (half
    /// the work there: a 14x14 map's 196 positions leave 4 in the last panel, a classifier's
    /// one row 1).
    pub fn microkernels(&self) -> Vec<VnniMicrokernel> {
        let out = Int8Out::Requant { signed: self.signed };
        let short = self.m > MR_INT8 && !self.m.is_multiple_of(MR_INT8);
        let narrow = self.n % 32;
        let mut v = vec![];
        let isa = self.isa;
        // The last panel's tile columns: none or 16 where the column kernel takes the rest.
        let narrow = self.split().map_or(narrow, |(lead, _)| lead);
        // The 16-column form is the 512-bit tile's.
        let half = narrow <= 16 && isa == Int8Isa::Avx512Vnni;
        for (cols, valid) in [(32, 32), (if half { 16 } else { 32 }, narrow)] {
            if valid == 0 {
                break;
            }
            let walk = self.walk;
            v.push(VnniMicrokernel { rows: MR_INT8.min(self.m), cols, valid, out, isa, walk });
            if short {
                v.push(VnniMicrokernel { rows: self.m % MR_INT8, cols, valid, out, isa, walk });
            }
        }
        v
    }
    /// Where the last, partial column panel goes to the column kernel ([`VnniColumns`]):
    /// `(lead, cols)`, the 16-column tile taking the first `lead` (0 or 16) columns and the
    /// kernel the `cols` after them. Where the panel has 1 to `MAX_COLUMNS` columns (a
    /// classifier's one row, a 17x17 map's 289 positions) or 16 more (a 7x7 map's 49), on the
    /// 512-bit tile over packed panels; else None (the tile takes the panel).
    pub fn split(&self) -> Option<(usize, usize)> {
        if self.isa != Int8Isa::Avx512Vnni || self.walk.is_some() {
            return None;
        }
        match self.n % 32 {
            r @ 1..=MAX_COLUMNS => Some((0, r)),
            r if r > 16 && r - 16 <= MAX_COLUMNS => Some((16, r - 16)),
            _ => None,
        }
    }
    /// The column kernels it calls after the tiles (full and short row panels), where it splits.
    pub fn column_kernels(&self) -> Vec<VnniColumns> {
        let Some((_, cols)) = self.split() else { return vec![] };
        let out = Int8Out::Requant { signed: self.signed };
        let mut v = vec![VnniColumns { rows: MR_INT8.min(self.m), cols, out }];
        if self.m > MR_INT8 && !self.m.is_multiple_of(MR_INT8) {
            v.push(VnniColumns { rows: self.m % MR_INT8, cols, out });
        }
        v
    }
    pub fn flops(&self) -> u64 {
        2 * (self.images * self.m * self.n * self.quads * 4) as u64
    }
}

impl super::KernelSpec for Int8GemmSpec {
    fn name(&self) -> String {
        let order = if self.by_rows { " by rows" } else { "" };
        let planes = if self.walk.is_some() { " in planes" } else { "" };
        format!("int8 gemm {}x{}x{}{order}{planes} {}", self.m, self.n, self.quads * 4, self.isa.name())
    }

    fn emit(&self, kb: &mut super::builder::Kb) {
        use cranelift_codegen::ir::{InstBuilder, Value};

        let ops: Vec<_> = (0..6).map(|i| kb.operand(i)).collect();
        let (a, b, bias, mult, consts, c) = (ops[0], ops[1], ops[2], ops[3], ops[4], ops[5]);
        let (tiles, split) = (self.microkernels().len(), self.split());
        let uk: Vec<_> = (0..tiles + self.column_kernels().len()).map(|i| kb.operand(6 + i)).collect();
        let (panels, pm, rem) = (self.panels(), self.row_panels(), self.m % MR_INT8);
        let a_panel = (self.quads * MR_INT8 * if self.isa == Int8Isa::Avx2 { 8 } else { 4 }) as i64;
        // A panel's bytes, an image's, and from one column panel to the next.
        let (b_image, b_panel) = match self.walk {
            Some(w) => (w.image_bytes() as i64, QUAD_ROW_BYTES as i64),
            None => ((panels * self.quads * QUAD_ROW_BYTES) as i64, (self.quads * QUAD_ROW_BYTES) as i64),
        };
        let narrow = self.n % 32;
        let full_rows = MR_INT8.min(self.m);
        // Tiles per column width: full and short row panels (see `microkernels`).
        let per_width = if self.m > MR_INT8 && rem != 0 { 2 } else { 1 };
        // One tile call: row panel r (a constant or a value) of image img by column panel p,
        // into C (the narrow last panel by its own tile, which stores only its columns).
        let call = |kb: &mut super::builder::Kb, img: Value, r: Value, r_rows: usize, p: Value, last: bool| {
            let bpan = {
                let i = kb.muli(img, b_image);
                let o = kb.muli(p, b_panel);
                let o = kb.add(i, o);
                kb.elem(b, o, 1)
            };
            let aptr = {
                let o = kb.muli(r, a_panel);
                kb.elem(a, o, 1)
            };
            let row0 = kb.muli(r, MR_INT8 as i64);
            let cptr = {
                let o = kb.muli(img, (self.m * self.ldc) as i64);
                let cimg = kb.elem(c, o, 1);
                let col = kb.muli(p, 32);
                let o = kb.muli(row0, self.ldc as i64);
                let o = kb.add(o, col);
                kb.elem(cimg, o, 1)
            };
            let bias_p = kb.elem(bias, row0, 4);
            let mult_p = kb.elem(mult, row0, 4);
            let ldc_v = kb.iconst(self.ldc as i64);
            let quads = kb.iconst(self.quads as i64);
            let args = [aptr, bpan, cptr, ldc_v, quads, bias_p, mult_p, consts];
            match (last, split) {
                (true, Some((lead, _))) => {
                    if lead > 0 {
                        kb.call_code(uk[if r_rows == full_rows { 0 } else { 1 } + per_width], &args);
                    }
                    // The columns past the tile's: B 4 bytes a column on in each quad row.
                    let g = uk[tiles + if r_rows == full_rows { 0 } else { 1 }];
                    let (b_cols, c_cols) = (kb.addi(bpan, 4 * lead as i64), kb.addi(cptr, lead as i64));
                    kb.call_code(g, &[aptr, b_cols, c_cols, ldc_v, quads, bias_p, mult_p, consts]);
                }
                _ => {
                    let f = uk[if r_rows == full_rows { 0 } else { 1 } + if last { per_width } else { 0 }];
                    kb.call_code(f, &args);
                }
            }
        };
        let (begin, end) = (kb.begin, kb.end);
        let full_panels = (self.n / 32) as i64;
        if self.by_rows {
            kb.for_range(begin, end, 1, |kb, t| {
                let (img, r) = kb.divmod(t, pm as i64);
                // The last row panel may be short: its own tile.
                let short = rem != 0 && self.m > MR_INT8;
                let body = |kb: &mut super::builder::Kb, rows: usize| {
                    kb.for_const(0, full_panels, 1, |kb, p| call(kb, img, r, rows, p, false));
                    if narrow != 0 {
                        let p = kb.iconst(full_panels);
                        call(kb, img, r, rows, p, true);
                    }
                };
                if short {
                    let last = kb.eqi(r, pm as i64 - 1);
                    let (short_b, full_b, join) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
                    kb.b.ins().brif(last, short_b, &[], full_b, &[]);
                    kb.b.switch_to_block(short_b);
                    body(kb, rem);
                    kb.b.ins().jump(join, &[]);
                    kb.b.switch_to_block(full_b);
                    body(kb, full_rows);
                    kb.b.ins().jump(join, &[]);
                    kb.b.switch_to_block(join);
                } else {
                    body(kb, full_rows);
                }
            });
        } else {
            kb.for_range(begin, end, 1, |kb, t| {
                let (img, p) = kb.divmod(t, panels as i64);
                let rows_of = |r: usize| if r == pm - 1 && rem != 0 && self.m > MR_INT8 { rem } else { full_rows };
                let all_rows = |kb: &mut super::builder::Kb, last: bool| {
                    for r in 0..pm {
                        let rv = kb.iconst(r as i64);
                        call(kb, img, rv, rows_of(r), p, last);
                    }
                };
                if narrow == 0 {
                    all_rows(kb, false);
                } else {
                    let last = kb.eqi(p, panels as i64 - 1);
                    let (last_b, full_b, join) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
                    kb.b.ins().brif(last, last_b, &[], full_b, &[]);
                    kb.b.switch_to_block(last_b);
                    all_rows(kb, true);
                    kb.b.ins().jump(join, &[]);
                    kb.b.switch_to_block(full_b);
                    all_rows(kb, false);
                    kb.b.ins().jump(join, &[]);
                    kb.b.switch_to_block(join);
                }
            });
        }
    }
}

/// A conv's input as a byte matrix `[image][k][position]` (k = channel, then window row and
/// column; positions row-major): row k of output row oy is the input row the tap reads, from
/// the tap's column on, every `sw`-th byte (a contiguous copy at stride 1, two loads and a
/// shuffle per 16 at stride 2), with `fill` (the zero point) where the window leaves the input.
/// [`QuadIm2colSpec`] then interleaves it as a pointwise conv would. Operands: X, the matrix.
/// One tile per (image, k).
#[derive(Clone, Debug)]
pub struct Im2colBytesSpec {
    pub n: usize,
    pub c: usize,
    /// The output rows it makes and the input rows they read (a band of a conv: its rows from
    /// the band's first input row on, `g.h` of them, with the padding that leaves).
    pub g: Geom,
    /// Bytes from one input channel plane to the next (the whole input's `h * w`).
    pub plane: usize,
    pub fill: u8,
    /// Whether the machine-code tap rows (AVX512-BW) may run; else the CLIF copy.
    pub avx512: bool,
}

impl Im2colBytesSpec {
    pub fn k(&self) -> usize {
        self.c * self.g.kh * self.g.kw
    }
    pub fn bytes(&self) -> usize {
        self.n * self.k() * self.g.oh * self.g.ow
    }
    pub fn tiles(&self) -> usize {
        self.n * self.k()
    }
    /// The output columns whose input column `ox sw + kx dw - pw` lies inside the input, for
    /// window column kx.
    fn inside(&self, kx: usize) -> (usize, usize) {
        let (shift, sw) = ((kx * self.g.dw) as i64 - self.g.pw as i64, self.g.sw as i64);
        // The first ox with ox sw + shift >= bound.
        let first = |bound: i64| ((bound - shift).max(0) as u64).div_ceil(sw as u64).min(self.g.ow as u64) as i64;
        let lo = first(0);
        (lo as usize, first(self.g.w as i64).max(lo) as usize)
    }
}

/// Stores `len` bytes of `fill` at `dst` (16 at a time, then one at a time).
fn fill_bytes(kb: &mut super::builder::Kb, dst: cranelift_codegen::ir::Value, len: usize, fill: u8) {
    use cranelift_codegen::ir::InstBuilder;
    use cranelift_codegen::ir::types::{I8, I8X16};

    use super::builder::rw;
    let b = kb.b.ins().iconst(I8, fill as i64);
    let v = kb.b.ins().splat(I8X16, b);
    for o in (0..len / 16).map(|i| 16 * i) {
        kb.b.ins().store(rw(), v, dst, o as i32);
    }
    for o in len / 16 * 16..len {
        kb.b.ins().store(rw(), b, dst, o as i32);
    }
}

impl Im2colBytesSpec {
    /// The machine-code tap rows it calls, one per window tap in order (column strides 1 and
    /// 2; wider strides copy in CLIF).
    pub fn tap_kernels(&self) -> Vec<super::int8_depthwise::TapRowsKernel> {
        if self.g.sw > 2 || !self.avx512 {
            return vec![];
        }
        (0..self.g.kh)
            .flat_map(|ky| (0..self.g.kw).map(move |kx| (ky, kx)))
            .map(|(ky, kx)| super::int8_depthwise::TapRowsKernel { g: self.g.clone(), ky, kx, fill: self.fill })
            .collect()
    }
}

impl super::KernelSpec for Im2colBytesSpec {
    fn name(&self) -> String {
        format!("im2col bytes {}x{} {}x{} c{}", self.g.kh, self.g.kw, self.g.oh, self.g.ow, self.c)
    }

    fn emit(&self, kb: &mut super::builder::Kb) {
        use cranelift_codegen::ir::InstBuilder;
        use cranelift_codegen::ir::condcodes::IntCC;
        let [x, y] = [kb.operand(0), kb.operand(1)];
        let (k, taps, npos) = (self.k(), self.g.kh * self.g.kw, self.g.oh * self.g.ow);
        let machine = !self.tap_kernels().is_empty();
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (img, kk) = kb.divmod(t, k as i64);
            let (ci, tap) = kb.divmod(kk, taps as i64);
            let row0 = {
                let o = kb.muli(t, npos as i64);
                kb.elem(y, o, 1)
            };
            let plane = {
                let c = kb.muli(img, self.c as i64);
                let c = kb.add(c, ci);
                let o = kb.muli(c, self.plane as i64);
                kb.elem(x, o, 1)
            };
            if machine {
                // The tap's kernel, from the run of them after Y.
                let f = kb.operand_at(2, tap);
                kb.call_code(f, &[plane, row0]);
                return;
            }
            let (ky, kx) = kb.divmod(tap, self.g.kw as i64);
            let dy = {
                let v = kb.muli(ky, self.g.dh as i64);
                kb.addi(v, -(self.g.ph as i64))
            };
            // One branch per window column: the copied span is a constant there.
            for col in 0..self.g.kw {
                let (lo, hi) = self.inside(col);
                let this = kb.eqi(kx, col as i64);
                let (body, next) = (kb.b.create_block(), kb.b.create_block());
                kb.b.ins().brif(this, body, &[], next, &[]);
                kb.b.switch_to_block(body);
                kb.for_const(0, self.g.oh as i64, 1, |kb, oy| {
                    let out = {
                        let o = kb.muli(oy, self.g.ow as i64);
                        kb.elem(row0, o, 1)
                    };
                    let iy = {
                        let r = kb.muli(oy, self.g.sh as i64);
                        kb.add(r, dy)
                    };
                    let in_y = kb.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, iy, self.g.h as i64);
                    let (copy_b, fill_b, join) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
                    kb.b.ins().brif(in_y, copy_b, &[], fill_b, &[]);
                    kb.b.switch_to_block(copy_b);
                    fill_bytes(kb, out, lo, self.fill);
                    let first = (lo * self.g.sw + col * self.g.dw) as i64 - self.g.pw as i64;
                    let src = {
                        let r = kb.muli(iy, self.g.w as i64);
                        let r = kb.addi(r, first);
                        kb.elem(plane, r, 1)
                    };
                    if hi > lo {
                        let avail = self.g.w as i64 - first;
                        super::int8_depthwise::gather(kb, src, out, lo, hi - lo, self.g.sw, avail, false);
                    }
                    let tail = {
                        let o = kb.iconst(hi as i64);
                        kb.elem(out, o, 1)
                    };
                    fill_bytes(kb, tail, self.g.ow - hi, self.fill);
                    kb.b.ins().jump(join, &[]);
                    kb.b.switch_to_block(fill_b);
                    fill_bytes(kb, out, self.g.ow, self.fill);
                    kb.b.ins().jump(join, &[]);
                    kb.b.switch_to_block(join);
                });
                kb.b.ins().jump(next, &[]);
                kb.b.switch_to_block(next);
            }
        });
    }
}
