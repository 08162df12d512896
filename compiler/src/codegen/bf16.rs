//! bf16 GEMMs: the instruction sets that multiply bf16 pairs into f32 sums, the layouts their
//! operands take, and the machine code that converts f32 panels into those layouts.
//!
//! A bf16 GEMM keeps the f32 GEMM's loop nest, blocking and epilogue (`kernels/gemm.rs`); only
//! its operands and innermost tile change:
//! - A (constant weights) is rounded to bf16 once, at compile time, and packed for the tier
//!   ([`Bf16Tier::a_offset`]): pairs of consecutive k per row for AVX512-BF16, 16-row x 32-k
//!   tiles for AMX.
//! - B stays the f32 panel the f32 GEMM reads (im2col panels, a 1x1 conv's input in place,
//!   run-time copies). For each K block of each column panel the loop nest calls a
//!   [`PairPack`] that rounds it to bf16 into a stack buffer in pair layout: row p holds
//!   `(B[2p][c], B[2p+1][c])` side by side for the panel's 32 columns (128 bytes), zero rows
//!   padding K to the tier's step. The conversion is paid once per panel and K block and shared
//!   by every row panel of the tile.
//! - Sums are f32 and the epilogue (bias, residual, activations) runs on them in f32, exactly as
//!   in the f32 GEMM.
//!
//! Rounding is to nearest even, as VCVTNEPS2BF16 does (which also flushes denormals to zero; a
//! bf16 denormal is below 1.2e-38, far under any tolerance bf16 is held to).

use iced_x86::code_asm::*;

use super::wide::asm_err;
use super::{CodegenError, KernelSpec};

/// An instruction set that multiplies bf16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bf16Tier {
    /// VDPBF16PS on zmm registers (AVX512-BF16: Cooper Lake, Sapphire Rapids and later, Zen 4
    /// and later): the AVX-512 tile (12 x 32) with a bf16 pair per lane.
    Avx512Bf16,
    /// AMX tiles (TDPBF16PS): 32 x 32 outputs in four 16 x 16 f32 accumulator tiles.
    Amx,
}

/// Rows of the AMX register tile (two 16-row tiles) and of its A panels.
pub const MR_AMX: usize = 32;
/// Bytes of one row of a pair buffer: 32 columns of two bf16.
pub const PAIR_ROW_BYTES: usize = 128;

impl Bf16Tier {
    pub const ALL: [Bf16Tier; 2] = [Bf16Tier::Avx512Bf16, Bf16Tier::Amx];

    pub fn name(self) -> &'static str {
        match self {
            Bf16Tier::Avx512Bf16 => "avx512bf16",
            Bf16Tier::Amx => "amx",
        }
    }

    /// CPU features its code needs on top of the AVX-512 tier's: the pair conversion uses
    /// VCVTNEPS2BF16 (AVX512-BF16) and VPMOVZXWD on zmm (AVX512-BW).
    pub fn features(self) -> &'static [&'static str] {
        match self {
            Bf16Tier::Avx512Bf16 => &["avx512bw", "avx512bf16"],
            Bf16Tier::Amx => &["avx512bw", "avx512bf16", "amx-tile", "amx-bf16"],
        }
    }

    /// The bf16 tier of a kernel by its name (GEMM kernels end with the tier's name).
    pub fn of_kernel(name: &str) -> Option<Bf16Tier> {
        Bf16Tier::ALL.into_iter().find(|t| name.starts_with("gemm ") && name.ends_with(&format!(" {}", t.name())))
    }

    /// Whether this CPU (and, for AMX, the OS) runs the tier.
    pub fn runs_here(self) -> bool {
        super::wide::host_has_avx512() && self.features().iter().all(|f| incept_runtime::cpu::has_feature(f))
    }

    /// The bf16 tier `--cpu native` picks: AVX512-BF16 where the CPU has it. The AMX tier has
    /// not run on AMX hardware yet (it is compiled, decoded and emulated by the tests only), so
    /// it is chosen by name (`--cpu amx`), not by default, until it has.
    pub fn host() -> Option<Bf16Tier> {
        [Bf16Tier::Avx512Bf16].into_iter().find(|t| t.runs_here())
    }

    /// Rows of the register tile and of a packed A panel.
    pub fn mr(self) -> usize {
        match self {
            Bf16Tier::Avx512Bf16 => super::wide::MR_512,
            Bf16Tier::Amx => MR_AMX,
        }
    }

    /// The K steps one step of the microkernel consumes: K blocks, A panels and pair buffers
    /// are padded with zeros to a multiple of it.
    pub fn k_step(self) -> usize {
        match self {
            Bf16Tier::Avx512Bf16 => 2,
            Bf16Tier::Amx => 32,
        }
    }

    /// bf16 values in one packed A panel of `k` steps.
    pub fn a_panel_len(self, k: usize) -> usize {
        k.next_multiple_of(self.k_step()) * self.mr()
    }

    /// Where A(r, k) of a panel (row r of the panel) lies in it, in bf16 values: pairs of
    /// consecutive k per row for AVX512-BF16 (`[k / 2][r][k % 2]`), 16-row tiles 32 k wide for
    /// AMX (`[k / 32][r][k % 32]`, each 16-row half a 1 KB tile).
    pub fn a_offset(self, r: usize, k: usize) -> usize {
        match self {
            Bf16Tier::Avx512Bf16 => (k / 2) * self.mr() * 2 + r * 2 + k % 2,
            Bf16Tier::Amx => (k / 32) * MR_AMX * 32 + r * 32 + k % 32,
        }
    }

    /// The A panel's step per k, in the GEMM's 4-byte units (valid at every k the loop nest
    /// starts a block at: multiples of `k_step`).
    pub fn a_cs(self) -> isize {
        (self.a_panel_len(self.k_step()) / self.k_step() / 2) as isize
    }

    /// Bytes of the pair buffer for a K block of `kc` steps.
    pub fn pair_bytes(self, kc: usize) -> usize {
        kc.next_multiple_of(self.k_step()) / 2 * PAIR_ROW_BYTES
    }
}

/// f32 to bf16, rounding to nearest even; NaN stays NaN (quieted), as VCVTNEPS2BF16 does. Its
/// flush of denormal inputs to zero is left out: compile-time weights keep them.
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// The f32 a bf16 stands for.
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// f32 rounded to the nearest bf16, as an f32.
pub fn round_bf16(x: f32) -> f32 {
    from_bf16(to_bf16(x))
}

/// Converts `kc` rows of an f32 B panel (`cols` = 32 or 16 floats per row, rows
/// `src_row_bytes` apart) into a pair buffer (see the module documentation), zero rows padding
/// to a multiple of `pad` k:
///
/// ```text
/// extern "sysv64" fn(src: *const f32, dst: *mut u16, kc: usize)
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairPack {
    pub cols: usize,
    pub src_row_bytes: i32,
    pub pad: usize,
}

impl PairPack {
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        assert!(self.cols == 16 || self.cols == 32, "a pair panel is 16 or 32 columns");
        assert!(self.pad.is_power_of_two() && self.pad >= 2, "pairs pad K to a power of two");
        let e = asm_err;
        let srb = self.src_row_bytes;
        let vecs = (self.cols / 16) as i32;
        let mut x = CodeAssembler::new(64).map_err(e)?;
        let (mut pairs, mut odd, mut pad) = (x.create_label(), x.create_label(), x.create_label());
        x.mov(rax, rdx).map_err(e)?;
        x.vpxord(zmm31, zmm31, zmm31).map_err(e)?;
        x.cmp(rdx, 2).map_err(e)?;
        x.jb(odd).map_err(e)?;
        // Two rows at a time: row k's bf16 in the low half of each dword, row k + 1's in the high.
        x.set_label(&mut pairs).map_err(e)?;
        for v in 0..vecs {
            x.vcvtneps2bf16(ymm0, zmmword_ptr(rdi + 64 * v)).map_err(e)?;
            x.vcvtneps2bf16(ymm1, zmmword_ptr(rdi + srb + 64 * v)).map_err(e)?;
            x.vpmovzxwd(zmm0, ymm0).map_err(e)?;
            x.vpmovzxwd(zmm1, ymm1).map_err(e)?;
            x.vpslld(zmm1, zmm1, 16).map_err(e)?;
            x.vpord(zmm0, zmm0, zmm1).map_err(e)?;
            x.vmovups(zmmword_ptr(rsi + 64 * v), zmm0).map_err(e)?;
        }
        x.add(rdi, 2 * srb).map_err(e)?;
        x.add(rsi, PAIR_ROW_BYTES as i32).map_err(e)?;
        x.sub(rdx, 2).map_err(e)?;
        x.cmp(rdx, 2).map_err(e)?;
        x.jae(pairs).map_err(e)?;
        // An odd last row pairs with zero.
        x.set_label(&mut odd).map_err(e)?;
        x.test(rdx, rdx).map_err(e)?;
        x.jz(pad).map_err(e)?;
        for v in 0..vecs {
            x.vcvtneps2bf16(ymm0, zmmword_ptr(rdi + 64 * v)).map_err(e)?;
            x.vpmovzxwd(zmm0, ymm0).map_err(e)?;
            x.vmovups(zmmword_ptr(rsi + 64 * v), zmm0).map_err(e)?;
        }
        x.add(rsi, PAIR_ROW_BYTES as i32).map_err(e)?;
        // Zero rows up to the padded K: round_up(kc, pad) / 2 - ceil(kc / 2) of them.
        x.set_label(&mut pad).map_err(e)?;
        if self.pad > 2 {
            let (mut zeros, mut done) = (x.create_label(), x.create_label());
            x.lea(rcx, qword_ptr(rax + (self.pad as i32 - 1))).map_err(e)?;
            x.and(rcx, -(self.pad as i32)).map_err(e)?;
            x.shr(rcx, 1).map_err(e)?;
            x.lea(rdx, qword_ptr(rax + 1)).map_err(e)?;
            x.shr(rdx, 1).map_err(e)?;
            x.sub(rcx, rdx).map_err(e)?;
            x.jz(done).map_err(e)?;
            x.set_label(&mut zeros).map_err(e)?;
            x.vmovups(zmmword_ptr(rsi), zmm31).map_err(e)?;
            x.vmovups(zmmword_ptr(rsi + 64), zmm31).map_err(e)?;
            x.add(rsi, PAIR_ROW_BYTES as i32).map_err(e)?;
            x.dec(rcx).map_err(e)?;
            x.jnz(zeros).map_err(e)?;
            x.set_label(&mut done).map_err(e)?;
        }
        x.vzeroupper().map_err(e)?;
        x.ret().map_err(e)?;
        x.assemble(0).map_err(e)
    }
}

impl KernelSpec for PairPack {
    fn name(&self) -> String {
        format!("bf16 pairs {} ldb {} pad {}", self.cols, self.src_row_bytes, self.pad)
    }
    fn emit(&self, _: &mut super::builder::Kb) {
        unreachable!("a pair packer is machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
}

/// A step kernel (`extern "C" fn(args, begin, end)`, args = [source, destination]) that
/// converts f32 panels `[panel][k][w]` (w <= 16 floats per k) into bf16 pair panels
/// `[panel][ceil(k / 2)][w][2]`, the A layout of the AVX512-BF16 microkernel for panels of w
/// rows (an odd last k pairs with zero); one tile per panel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairPanels {
    pub k: usize,
    pub w: usize,
    /// Panels converted (the tile count: a kernel's steps all have its tile count).
    pub panels: usize,
}

impl PairPanels {
    pub fn tiles(&self) -> usize {
        self.panels
    }
    pub fn src_panel_bytes(&self) -> usize {
        self.k * self.w * 4
    }
    pub fn dst_panel_bytes(&self) -> usize {
        self.k.div_ceil(2) * self.w * 4
    }

    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        assert!((1..=16).contains(&self.w) && self.k >= 1, "pair panels are 1 to 16 floats wide");
        let e = asm_err;
        let w4 = (self.w * 4) as i32;
        let mut x = CodeAssembler::new(64).map_err(e)?;
        let (mut tile, mut done) = (x.create_label(), x.create_label());
        x.cmp(rsi, rdx).map_err(e)?;
        x.jae(done).map_err(e)?;
        x.mov(r8, qword_ptr(rdi)).map_err(e)?;
        x.mov(r9, qword_ptr(rdi + 8)).map_err(e)?;
        x.mov(eax, (1u32 << self.w) - 1).map_err(e)?;
        x.kmovw(k1, eax).map_err(e)?;
        x.imul_3(r10, rsi, self.src_panel_bytes() as i32).map_err(e)?;
        x.add(r10, r8).map_err(e)?;
        x.imul_3(r11, rsi, self.dst_panel_bytes() as i32).map_err(e)?;
        x.add(r11, r9).map_err(e)?;
        x.set_label(&mut tile).map_err(e)?;
        if self.k >= 2 {
            let mut pair = x.create_label();
            x.mov(rcx, (self.k / 2) as u64).map_err(e)?;
            x.set_label(&mut pair).map_err(e)?;
            x.vcvtneps2bf16(ymm0.k1().z(), zmmword_ptr(r10)).map_err(e)?;
            x.vcvtneps2bf16(ymm1.k1().z(), zmmword_ptr(r10 + w4)).map_err(e)?;
            x.vpmovzxwd(zmm0, ymm0).map_err(e)?;
            x.vpmovzxwd(zmm1, ymm1).map_err(e)?;
            x.vpslld(zmm1, zmm1, 16).map_err(e)?;
            x.vpord(zmm0, zmm0, zmm1).map_err(e)?;
            x.vmovdqu32(zmmword_ptr(r11).k1(), zmm0).map_err(e)?;
            x.add(r10, 2 * w4).map_err(e)?;
            x.add(r11, w4).map_err(e)?;
            x.dec(rcx).map_err(e)?;
            x.jnz(pair).map_err(e)?;
        }
        if self.k % 2 == 1 {
            x.vcvtneps2bf16(ymm0.k1().z(), zmmword_ptr(r10)).map_err(e)?;
            x.vpmovzxwd(zmm0, ymm0).map_err(e)?;
            x.vmovdqu32(zmmword_ptr(r11).k1(), zmm0).map_err(e)?;
            x.add(r10, w4).map_err(e)?;
            x.add(r11, w4).map_err(e)?;
        }
        x.inc(rsi).map_err(e)?;
        x.cmp(rsi, rdx).map_err(e)?;
        x.jb(tile).map_err(e)?;
        x.set_label(&mut done).map_err(e)?;
        x.vzeroupper().map_err(e)?;
        x.ret().map_err(e)?;
        x.assemble(0).map_err(e)
    }
}

impl KernelSpec for PairPanels {
    fn name(&self) -> String {
        format!("bf16 pair panels k{} w{} x{}", self.k, self.w, self.panels)
    }
    fn emit(&self, _: &mut super::builder::Kb) {
        unreachable!("pair panels are machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
}

/// A step kernel (`extern "C" fn(args, begin, end)`, args = [source, destination]) that writes
/// the padded bf16 planes an implicit conv reads: f32 images `[n][c][h][w]` into
/// `[n][ceil(c / 2)][hp][wp][2]` bf16, channels 2p and 2p + 1 side by side (a missing odd channel
/// zero), the image at row `ph` and column `pw` of its plane, zeros around it (every row past the
/// image too: the GEMM's last column panel reads past its row into them). One tile per plane row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PadPairs {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub ph: usize,
    pub pw: usize,
    pub hp: usize,
    pub wp: usize,
}

impl PadPairs {
    pub fn pairs(&self) -> usize {
        self.c.div_ceil(2)
    }
    pub fn tiles(&self) -> usize {
        self.n * self.pairs() * self.hp
    }
    /// Bytes of one channel pair's plane.
    pub fn plane_bytes(&self) -> usize {
        self.hp * self.wp * 4
    }
    pub fn bytes(&self) -> usize {
        self.n * self.pairs() * self.plane_bytes()
    }

    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        assert!(self.hp >= self.h + self.ph && self.wp >= self.w + self.pw, "the plane holds the image");
        let e = asm_err;
        let (hp, wp, h, w) = (self.hp as u64, self.wp as u64, self.h as u64, self.w as u64);
        let chan = (self.h * self.w * 4) as i64;
        plane_rows_kernel(|x, next| {
            // tile = (image * hp + yp) * pairs + pair: consecutive tiles are the pairs of one padded
            // row, so a thread's run of tiles is a band of rows, as the GEMMs before and after this
            // step split their work (positions), and it mostly reads and writes its own rows.
            x.mov(rax, rsi).map_err(e)?;
            x.xor(edx, edx).map_err(e)?;
            x.mov(rcx, self.pairs() as u64).map_err(e)?;
            x.div(rcx).map_err(e)?;
            x.mov(r12, rdx).map_err(e)?;
            x.xor(edx, edx).map_err(e)?;
            x.mov(rcx, hp).map_err(e)?;
            x.div(rcx).map_err(e)?;
            // rax = image, rdx = yp, r12 = pair. The destination row: ((image * pairs + pair) * hp
            // + yp) * wp dwords.
            x.imul_3(rbx, rax, self.pairs() as i32).map_err(e)?;
            x.add(rbx, r12).map_err(e)?;
            x.imul_3(rbx, rbx, self.hp as i32).map_err(e)?;
            x.add(rbx, rdx).map_err(e)?;
            x.imul_3(rbx, rbx, (self.wp * 4) as i32).map_err(e)?;
            x.lea(r10, qword_ptr(r9 + rbx)).map_err(e)?;
            zero_dwords(x, r10, wp)?;
            // The image row y = yp - ph, if inside.
            x.sub(rdx, self.ph as i32).map_err(e)?;
            x.cmp(rdx, h as i32).map_err(e)?;
            x.jae(next).map_err(e)?; // also catches yp < ph (wrapped)
            // Source row y of channel 2 * pair of the image.
            x.imul_3(rax, rax, (self.c as i64 * chan) as i32).map_err(e)?;
            x.imul_3(r12, r12, (2 * chan) as i32).map_err(e)?;
            x.add(rax, r12).map_err(e)?;
            x.imul_3(rdx, rdx, (self.w * 4) as i32).map_err(e)?;
            x.add(rax, rdx).map_err(e)?;
            x.lea(r11, qword_ptr(r8 + rax)).map_err(e)?;
            // Is there a second channel (an odd last one pairs with zero)? r12 = pair * 2 * chan.
            x.add(r10, (self.pw * 4) as i32).map_err(e)?;
            let odd = self.c % 2 == 1;
            let last_pair_offset = ((self.pairs() - 1) as i64 * 2 * chan) as i32;
            let chunks: Vec<(u64, u64)> = (0..w.div_ceil(16)).map(|q| (q * 16, (w - q * 16).min(16))).collect();
            for &(c0, len) in &chunks {
                let off = (c0 * 4) as i32;
                x.mov(eax, ((1u64 << len) - 1) as u32).map_err(e)?;
                x.kmovw(k1, eax).map_err(e)?;
                x.vcvtneps2bf16(ymm0.k1().z(), zmmword_ptr(r11 + off)).map_err(e)?;
                x.vpmovzxwd(zmm0, ymm0).map_err(e)?;
                // The last pair of an odd channel count has no second channel.
                let mut store = x.create_label();
                if odd {
                    x.cmp(r12, last_pair_offset).map_err(e)?;
                    x.je(store).map_err(e)?;
                }
                x.vcvtneps2bf16(ymm1.k1().z(), zmmword_ptr(r11 + off + chan as i32)).map_err(e)?;
                x.vpmovzxwd(zmm1, ymm1).map_err(e)?;
                x.vpslld(zmm1, zmm1, 16).map_err(e)?;
                x.vpord(zmm0, zmm0, zmm1).map_err(e)?;
                x.set_label(&mut store).map_err(e)?;
                x.vmovdqu32(zmmword_ptr(r10 + off).k1(), zmm0).map_err(e)?;
            }
            Ok(())
        })
    }
}

/// A step kernel over plane rows (`extern "C" fn(args, begin, end)`): r8 = args[0] (the
/// source), r9 = args[1] (the destination), zmm31 = 0, and `row` emitted once for the tile in
/// rsi (it may jump to `next` to end the tile early; rax, rcx, rdx, rbx, r10-r12, zmm0-zmm30
/// and k1-k2 are its own).
pub(super) fn plane_rows_kernel(
    row: impl FnOnce(&mut CodeAssembler, CodeLabel) -> Result<(), CodegenError>,
) -> Result<Vec<u8>, CodegenError> {
    let e = asm_err;
    let mut x = CodeAssembler::new(64).map_err(e)?;
    let (mut tile, mut done, mut next) = (x.create_label(), x.create_label(), x.create_label());
    x.cmp(rsi, rdx).map_err(e)?;
    x.jae(done).map_err(e)?;
    x.push(rbx).map_err(e)?;
    x.push(r12).map_err(e)?;
    x.push(r13).map_err(e)?;
    x.mov(r13, rdx).map_err(e)?;
    x.mov(r8, qword_ptr(rdi)).map_err(e)?;
    x.mov(r9, qword_ptr(rdi + 8)).map_err(e)?;
    x.vpxord(zmm31, zmm31, zmm31).map_err(e)?;
    x.set_label(&mut tile).map_err(e)?;
    row(&mut x, next)?;
    x.set_label(&mut next).map_err(e)?;
    x.inc(rsi).map_err(e)?;
    x.cmp(rsi, r13).map_err(e)?;
    x.jb(tile).map_err(e)?;
    x.pop(r13).map_err(e)?;
    x.pop(r12).map_err(e)?;
    x.pop(rbx).map_err(e)?;
    x.set_label(&mut done).map_err(e)?;
    x.vzeroupper().map_err(e)?;
    x.ret().map_err(e)?;
    x.assemble(0).map_err(e)
}

/// Zeroes `dwords` dwords at `dst` (zmm stores of zmm31, then a masked tail through k2).
pub(super) fn zero_dwords(x: &mut CodeAssembler, dst: AsmRegister64, dwords: u64) -> Result<(), CodegenError> {
    let e = asm_err;
    for q in 0..(dwords / 16) as i32 {
        x.vmovdqu32(zmmword_ptr(dst + 64 * q), zmm31).map_err(e)?;
    }
    if !dwords.is_multiple_of(16) {
        x.mov(ecx, (1u32 << (dwords % 16)) - 1).map_err(e)?;
        x.kmovw(k2, ecx).map_err(e)?;
        x.vmovdqu32(zmmword_ptr(dst + 64 * (dwords / 16) as i32).k2(), zmm31).map_err(e)?;
    }
    Ok(())
}

impl KernelSpec for PadPairs {
    fn name(&self) -> String {
        format!("bf16 pair planes {}x{}x{} pad {}x{}", self.c, self.h, self.w, self.hp, self.wp)
    }
    fn emit(&self, _: &mut super::builder::Kb) {
        unreachable!("pair planes are machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
}

/// Loads the AMX tile configuration every AMX microkernel assumes (palette 1, all eight tiles
/// 16 rows of 64 bytes), or releases the tile state (`release`): a bf16 GEMM on AMX calls the
/// first before its tiles and the second after them, on the thread that runs them (the
/// configuration is per thread). `extern "sysv64" fn()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmxTiles {
    pub release: bool,
}

impl AmxTiles {
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        let e = asm_err;
        let mut x = CodeAssembler::new(64).map_err(e)?;
        if self.release {
            x.tilerelease().map_err(e)?;
        } else {
            configure_tiles(&mut x)?;
        }
        x.ret().map_err(e)?;
        x.assemble(0).map_err(e)
    }
}

/// LDTILECFG of the configuration every AMX kernel here assumes (palette 1, all eight tiles
/// 16 rows of 64 bytes), built in the red zone (the callers are leaf functions).
fn configure_tiles(x: &mut CodeAssembler) -> Result<(), CodegenError> {
    let e = asm_err;
    for q in 0..8 {
        x.mov(qword_ptr(rsp - 64 + 8 * q), 0).map_err(e)?;
    }
    x.mov(byte_ptr(rsp - 64), 1).map_err(e)?;
    for t in 0..8 {
        x.mov(word_ptr(rsp - 64 + 16 + 2 * t), 64).map_err(e)?;
        x.mov(byte_ptr(rsp - 64 + 48 + t), 16).map_err(e)?;
    }
    x.ldtilecfg(ptr(rsp - 64)).map_err(e)
}

/// The TDPBF16PS peak probe: `iterations` rounds of four independent tile products (the
/// microkernel's 2x2 accumulators), as `extern "sysv64" fn(out: *mut f32, iterations: usize)`
/// storing the first accumulator tile (256 floats) so the work is not dead. Configures and
/// releases the tiles itself. Each TDPBF16PS is 16 x 16 x 32 multiply-adds.
#[derive(Clone, Debug)]
pub struct AmxPeak;

impl AmxPeak {
    pub const FLOPS_PER_ITERATION: usize = 4 * 16 * 16 * 32 * 2;

    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        let e = asm_err;
        let mut x = CodeAssembler::new(64).map_err(e)?;
        configure_tiles(&mut x)?;
        for t in [tmm0, tmm1, tmm2, tmm3, tmm4, tmm5, tmm6, tmm7] {
            x.tilezero(t).map_err(e)?;
        }
        let mut top = x.create_label();
        x.set_label(&mut top).map_err(e)?;
        x.tdpbf16ps(tmm0, tmm4, tmm6).map_err(e)?;
        x.tdpbf16ps(tmm1, tmm4, tmm7).map_err(e)?;
        x.tdpbf16ps(tmm2, tmm5, tmm6).map_err(e)?;
        x.tdpbf16ps(tmm3, tmm5, tmm7).map_err(e)?;
        x.dec(rsi).map_err(e)?;
        x.jnz(top).map_err(e)?;
        x.mov(rax, 64u64).map_err(e)?;
        x.tilestored(ptr(rdi + rax * 1), tmm0).map_err(e)?;
        x.tilerelease().map_err(e)?;
        x.ret().map_err(e)?;
        x.assemble(0).map_err(e)
    }
}

impl KernelSpec for AmxTiles {
    fn name(&self) -> String {
        if self.release { "amx tile release".into() } else { "amx tile config".into() }
    }
    fn emit(&self, _: &mut super::builder::Kb) {
        unreachable!("the AMX tile configuration is machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
}

/// The AMX register tile: `rows` (1..=32) x `cols` (16 or 32) outputs in up to four 16 x 16 f32
/// accumulator tiles (tmm0-3; A tiles tmm4-5, B tiles tmm6-7), with the wide microkernel's ABI
/// (see `wide.rs`): A at the block's first k in the AMX layout ([`Bf16Tier::a_offset`]), B a
/// pair buffer, `kc` k steps (rounded up to 32: the packing zero-pads). The tiles go to a
/// stack scratch, then each row goes through the f32 epilogue of the wide kernels (adding C
/// when accumulating, bias, bounds, residual) into C. Needs the configuration of [`AmxTiles`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmxMicrokernel {
    pub rows: usize,
    pub cols: usize,
    pub epilogue: Option<super::wide::WideEpilogue>,
}

impl AmxMicrokernel {
    // Column vector v lives in zmm v and at byte 64 v of a row: the index is both.
    #[allow(clippy::needless_range_loop)]
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        use super::wide::ZMM;
        assert!((1..=MR_AMX).contains(&self.rows), "an AMX tile has 1 to 32 rows");
        assert!(self.cols == 16 || self.cols == 32, "an AMX tile has 16 or 32 columns");
        let e = asm_err;
        let (rt, ct) = (self.rows.div_ceil(16), self.cols / 16);
        let acc = |i: usize, j: usize| [tmm0, tmm1, tmm2, tmm3][i * 2 + j];
        let mut x = CodeAssembler::new(64).map_err(e)?;
        x.push(rbp).map_err(e)?;
        x.mov(rbp, rsp).map_err(e)?;
        x.sub(rsp, 4096).map_err(e)?;
        x.and(rsp, -64).map_err(e)?;
        for i in 0..rt {
            for j in 0..ct {
                x.tilezero(acc(i, j)).map_err(e)?;
            }
        }
        x.mov(r10, 64u64).map_err(e)?;
        x.mov(r11, PAIR_ROW_BYTES as u64).map_err(e)?;
        x.add(r8, 31).map_err(e)?;
        x.shr(r8, 5).map_err(e)?;
        let mut block = x.create_label();
        x.set_label(&mut block).map_err(e)?;
        // One 32-k block: A rows 0-15 (and 16-31) 1 KB apart, B columns 0-15 (and 16-31) of the
        // pair rows (128 bytes per pair row).
        x.tileloadd(tmm4, ptr(rdi + r10 * 1)).map_err(e)?;
        if rt == 2 {
            x.tileloadd(tmm5, ptr(rdi + r10 * 1 + 1024)).map_err(e)?;
        }
        x.tileloadd(tmm6, ptr(rsi + r11 * 1)).map_err(e)?;
        if ct == 2 {
            x.tileloadd(tmm7, ptr(rsi + r11 * 1 + 64)).map_err(e)?;
        }
        for i in 0..rt {
            for j in 0..ct {
                x.tdpbf16ps(acc(i, j), [tmm4, tmm5][i], [tmm6, tmm7][j]).map_err(e)?;
            }
        }
        x.add(rdi, (MR_AMX * 64) as i32).map_err(e)?;
        x.add(rsi, (16 * PAIR_ROW_BYTES) as i32).map_err(e)?;
        x.dec(r8).map_err(e)?;
        x.jnz(block).map_err(e)?;
        // Row r of the scratch holds C's row r: tile (i, j) stored 128 bytes per row at i * 2048
        // + j * 64.
        for i in 0..rt {
            for j in 0..ct {
                x.tilestored(ptr(rsp + r11 * 1 + (i * 2048 + j * 64) as i32), acc(i, j)).map_err(e)?;
            }
        }
        let epi = self.epilogue.clone().unwrap_or(super::wide::WideEpilogue { bias: false, acts: vec![] });
        // Bounds splatted once (zmm16 on), the bias and residual pointers from the stack.
        let mut bounds = vec![];
        for a in &epi.acts {
            if let Some((bits, max)) = a.bound() {
                let r = 16 + bounds.len();
                x.mov(dword_ptr(rsp - 8), bits).map_err(e)?;
                x.vbroadcastss(ZMM[r], dword_ptr(rsp - 8)).map_err(e)?;
                bounds.push((r, max));
            }
        }
        x.mov(r10, qword_ptr(rbp + 16)).map_err(e)?;
        x.mov(r11, qword_ptr(rbp + 24)).map_err(e)?;
        x.mov(rax, rsp).map_err(e)?;
        x.mov(r8, self.rows as u64).map_err(e)?;
        let mut row = x.create_label();
        x.set_label(&mut row).map_err(e)?;
        for v in 0..ct {
            x.vmovups(ZMM[v], zmmword_ptr(rax + 64 * v as i32)).map_err(e)?;
        }
        let mut no_acc = x.create_label();
        x.test(r9, 1).map_err(e)?;
        x.jz(no_acc).map_err(e)?;
        for v in 0..ct {
            x.vaddps(ZMM[v], ZMM[v], zmmword_ptr(rdx + 64 * v as i32)).map_err(e)?;
        }
        x.set_label(&mut no_acc).map_err(e)?;
        if self.epilogue.is_some() {
            let mut no_epi = x.create_label();
            x.test(r9, 2).map_err(e)?;
            x.jz(no_epi).map_err(e)?;
            if epi.bias {
                x.vbroadcastss(zmm8, dword_ptr(r10)).map_err(e)?;
                for v in 0..ct {
                    x.vaddps(ZMM[v], ZMM[v], zmm8).map_err(e)?;
                }
            }
            let mut b = bounds.iter();
            for a in &epi.acts {
                match a.bound() {
                    // The residual row, laid out like C; read before C's row is stored.
                    None => {
                        for v in 0..ct {
                            x.vaddps(ZMM[v], ZMM[v], zmmword_ptr(r11 + 64 * v as i32)).map_err(e)?;
                        }
                    }
                    Some(_) => {
                        let &(r, max) = b.next().expect("a bound per bound step");
                        for v in 0..ct {
                            // vmaxps/vminps with the bound first: NaN and -0 as the reference.
                            if max {
                                x.vmaxps(ZMM[v], ZMM[r], ZMM[v]).map_err(e)?;
                            } else {
                                x.vminps(ZMM[v], ZMM[r], ZMM[v]).map_err(e)?;
                            }
                        }
                    }
                }
            }
            x.set_label(&mut no_epi).map_err(e)?;
        }
        for v in 0..ct {
            x.vmovups(zmmword_ptr(rdx + 64 * v as i32), ZMM[v]).map_err(e)?;
        }
        x.add(rdx, rcx).map_err(e)?;
        x.add(r11, rcx).map_err(e)?;
        x.add(r10, 4).map_err(e)?;
        x.add(rax, PAIR_ROW_BYTES as i32).map_err(e)?;
        x.dec(r8).map_err(e)?;
        x.jnz(row).map_err(e)?;
        x.mov(rsp, rbp).map_err(e)?;
        x.pop(rbp).map_err(e)?;
        x.vzeroupper().map_err(e)?;
        x.ret().map_err(e)?;
        x.assemble(0).map_err(e)
    }
}

impl KernelSpec for AmxMicrokernel {
    fn name(&self) -> String {
        format!("amx microkernel {}x{}", self.rows, self.cols)
    }
    fn emit(&self, _: &mut super::builder::Kb) {
        unreachable!("an AMX microkernel is machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use incept_runtime::code::ExecutableCode;

    #[test]
    fn rounding_is_to_nearest_even() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: even (1) wins; 1 + 3 * 2^-8 rounds up.
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(round_bf16(1.0 + 1.5 / 256.0), 1.0 + 2.0 / 256.0);
        assert_eq!(round_bf16(-2.5), -2.5);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY, "f32::MAX rounds past bf16's largest");
        for i in 0..10_000u32 {
            let x = f32::from_bits(0x3f80_0000 + i * 977);
            let r = round_bf16(x);
            assert!(((r - x) / x).abs() <= 1.0 / 256.0, "{x} -> {r}");
        }
    }

    #[test]
    fn a_layouts_place_every_element_once() {
        for t in Bf16Tier::ALL {
            for k in [1, 2, 3, 31, 32, 33, 70] {
                let len = t.a_panel_len(k);
                let mut seen = vec![false; len];
                for r in 0..t.mr() {
                    for kk in 0..k {
                        let o = t.a_offset(r, kk);
                        assert!(o < len && !seen[o], "{t:?} k {k}: A({r}, {kk}) at {o}");
                        seen[o] = true;
                    }
                }
                // A block starting at a multiple of the step starts at step * cs 4-byte units.
                let step = t.k_step();
                if step < k {
                    assert_eq!(t.a_offset(0, step) * 2, step * t.a_cs() as usize * 4, "{t:?}");
                }
            }
        }
    }

    type Pack = unsafe extern "sysv64" fn(*const f32, *mut u16, usize);

    /// Every K count around the pad, both widths, a row stride wider than the panel, NaN and
    /// halfway values: the packed pairs are the rounded inputs, the padding zero, and nothing
    /// past the padded K is written.
    #[test]
    fn pair_packing_matches_the_layout() {
        if !Bf16Tier::Avx512Bf16.runs_here() {
            println!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        for pad in [2usize, 32] {
            for cols in [16usize, 32] {
                for kc in [1usize, 2, 3, 4, 5, 31, 32, 33, 63, 64, 65, 256] {
                    let ld: usize = 40;
                    let code = PairPack { cols, src_row_bytes: (ld * 4) as i32, pad }.assemble().expect("assemble");
                    let exec = ExecutableCode::new(&code).expect("map");
                    // SAFETY: the code is a function with the documented signature.
                    let f: Pack = unsafe { std::mem::transmute(exec.address(0).expect("address")) };
                    let mut s = incept_ir::text::parse::SplitMix(kc as u64);
                    let mut src: Vec<f32> = (0..kc * ld).map(|_| s.uniform() as f32 * 8.0 - 4.0).collect();
                    src[0] = f32::NAN;
                    if kc > 1 {
                        src[ld + 1] = 1.0 + 1.0 / 256.0;
                    }
                    let rows = kc.next_multiple_of(pad) / 2;
                    let mut dst = vec![0xabcdu16; (rows + 2) * 64];
                    // SAFETY: src holds kc rows of `ld` floats; dst more than the padded pairs.
                    unsafe { f(src.as_ptr(), dst.as_mut_ptr(), kc) };
                    for p in 0..rows + 2 {
                        for c in 0..64 {
                            let got = dst[p * 64 + c];
                            let (col, half) = (c / 2, c % 2);
                            let k = 2 * p + half;
                            let want = if p >= rows {
                                Some(0xabcd)
                            } else if col >= cols {
                                // Columns past a 16-wide panel: zero in padding rows, else untouched.
                                if p >= kc.div_ceil(2) { Some(0) } else { Some(0xabcd) }
                            } else if k < kc {
                                Some(to_bf16(src[k * ld + col]))
                            } else {
                                Some(0)
                            };
                            let want = want.unwrap();
                            let nan_ok = k < kc && col < cols && src[k * ld + col].is_nan() && from_bf16(got).is_nan();
                            assert!(
                                got == want || nan_ok,
                                "pad {pad} cols {cols} kc {kc}: pair {p} lane {c} = {got:#x}, want {want:#x}"
                            );
                        }
                    }
                }
            }
        }
    }

    type Ukernel =
        unsafe extern "sysv64" fn(*const u16, *const u16, *mut f32, usize, usize, usize, *const f32, *const f32);

    /// The bf16 microkernels of every tier this CPU runs, every row count, both widths, K
    /// counts around the pair and tile steps, every flag, with and without the epilogue,
    /// against the f64 product of the same bf16 values: within the f32 rounding of the sums.
    #[test]
    fn bf16_microkernels_match_the_product_of_their_bf16_inputs() {
        use crate::codegen::Tier;
        use crate::codegen::wide::{WideAct, WideEpilogue, WideMicrokernel};
        let tiers: Vec<Bf16Tier> = Bf16Tier::ALL.into_iter().filter(|t| t.runs_here()).collect();
        if tiers.is_empty() {
            println!("skipped: this CPU runs no bf16 tier");
        }
        for t in tiers {
            let (mr, nr) = (t.mr(), 32);
            for (rows, cols) in (1..=mr).flat_map(|r| [(r, 16), (r, 32)]) {
                for epilogue in [None, Some(WideEpilogue { bias: true, acts: vec![WideAct::Relu] })] {
                    let code = match t {
                        Bf16Tier::Avx512Bf16 => WideMicrokernel {
                            tier: Tier::Avx512,
                            rows,
                            cols,
                            epilogue: epilogue.clone(),
                            b_row_bytes: None,
                            bf16: true,
                            taps: None,
                        }
                        .assemble(),
                        Bf16Tier::Amx => unreachable!("no AMX microkernel yet"),
                    }
                    .expect("assemble");
                    let exec = ExecutableCode::new(&code).expect("map");
                    // SAFETY: the code is a function with the documented signature.
                    let f: Ukernel = unsafe { std::mem::transmute(exec.address(0).expect("address")) };
                    for kc in [1usize, 2, 3, 7, 8, 9, 31, 32, 33, 64, 100] {
                        let mut s = incept_ir::text::parse::SplitMix(kc as u64 * 7 + rows as u64);
                        let mut val = || round_bf16(s.uniform() as f32 * 2.0 - 1.0);
                        let a: Vec<Vec<f32>> = (0..mr).map(|_| (0..kc).map(|_| val()).collect()).collect();
                        let b: Vec<Vec<f32>> = (0..kc).map(|_| (0..nr).map(|_| val()).collect()).collect();
                        let mut pa = vec![0u16; t.a_panel_len(kc)];
                        for (r, row) in a.iter().enumerate() {
                            for (k, &v) in row.iter().enumerate() {
                                pa[t.a_offset(r, k)] = to_bf16(v);
                            }
                        }
                        let pairs = kc.next_multiple_of(t.k_step()) / 2;
                        let mut pb = vec![0u16; pairs * 64];
                        for (k, row) in b.iter().enumerate() {
                            for (c, &v) in row.iter().enumerate() {
                                pb[(k / 2) * 64 + c * 2 + k % 2] = to_bf16(v);
                            }
                        }
                        let bias: Vec<f32> = (0..mr).map(|r| r as f32 * 0.25 - 2.0).collect();
                        for flags in 0..4usize {
                            let ldc = nr + 3;
                            let c0: Vec<f32> = (0..(mr + 1) * ldc).map(|i| (i % 7) as f32 - 3.0).collect();
                            let mut c = c0.clone();
                            // SAFETY: the panels hold the padded K, C `mr + 1` rows of ldc floats.
                            unsafe {
                                f(
                                    pa.as_ptr(),
                                    pb.as_ptr(),
                                    c.as_mut_ptr(),
                                    ldc * 4,
                                    kc,
                                    flags,
                                    bias.as_ptr(),
                                    std::ptr::null(),
                                )
                            };
                            for r in 0..=mr {
                                for j in 0..ldc {
                                    let (got, old) = (c[r * ldc + j], c0[r * ldc + j]);
                                    if r >= rows || j >= cols {
                                        assert_eq!(
                                            got.to_bits(),
                                            old.to_bits(),
                                            "{t:?} {rows}x{cols}: C[{r}][{j}] written"
                                        );
                                        continue;
                                    }
                                    let dot: f64 = (0..kc).map(|k| a[r][k] as f64 * b[k][j] as f64).sum();
                                    let mag: f64 = (0..kc).map(|k| (a[r][k] as f64 * b[k][j] as f64).abs()).sum();
                                    let mut want = dot + if flags & 1 == 1 { old as f64 } else { 0.0 };
                                    if epilogue.is_some() && flags & 2 == 2 {
                                        want = (want + bias[r] as f64).max(0.0);
                                    }
                                    let tol = 2e-7 * (kc as f64 + 2.0) * (mag + old.abs() as f64 + 2.0);
                                    assert!(
                                        (got as f64 - want).abs() <= tol,
                                        "{t:?} {rows}x{cols} kc {kc} flags {flags}: C[{r}][{j}] = {got}, want {want}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    type StepFn = unsafe extern "C" fn(*const *mut u8, usize, usize);

    /// Odd and even K, every width, a tile range that skips the first panel: each converted
    /// panel is the rounded source in pairs, and nothing outside the range is written.
    #[test]
    fn pair_panels_match_the_layout() {
        if !Bf16Tier::Avx512Bf16.runs_here() {
            println!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        for w in [1usize, 4, 12, 16] {
            for k in [1usize, 2, 3, 8, 9] {
                let spec = PairPanels { k, w, panels: 3 };
                let code = spec.assemble().expect("assemble");
                let exec = ExecutableCode::new(&code).expect("map");
                // SAFETY: the code is a step kernel with the documented operands.
                let f: StepFn = unsafe { std::mem::transmute(exec.address(0).expect("address")) };
                let panels = 3;
                let mut s = incept_ir::text::parse::SplitMix((w * 31 + k) as u64);
                let src: Vec<f32> = (0..panels * k * w).map(|_| s.uniform() as f32 * 4.0 - 2.0).collect();
                let per = k.div_ceil(2) * w * 2;
                let mut dst = vec![0x5555u16; panels * per + 8];
                let args = [src.as_ptr() as *mut u8, dst.as_mut_ptr() as *mut u8];
                // SAFETY: both buffers hold three panels (dst more); tiles 1..3.
                unsafe { f(args.as_ptr(), 1, 3) };
                for (i, &got) in dst.iter().enumerate() {
                    let (p, rest) = (i / per, i % per);
                    let want = if p == 0 || p >= panels {
                        0x5555
                    } else {
                        let (pair, r, half) = (rest / (w * 2), (rest % (w * 2)) / 2, rest % 2);
                        let kk = 2 * pair + half;
                        if kk < k { to_bf16(src[(p * k + kk) * w + r]) } else { 0 }
                    };
                    assert_eq!(got, want, "w {w} k {k}: u16 {i}");
                }
            }
        }
    }

    /// Odd and even channel counts, widths around the 16-lane chunks, pads of 0 to 2, two
    /// images, a tile range that skips the first row: every plane element is the rounded
    /// channel pair or zero, rows outside the range untouched.
    #[test]
    fn pad_pairs_match_the_layout() {
        if !Bf16Tier::Avx512Bf16.runs_here() {
            println!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        for (c, h, w, ph, pw) in [(3, 4, 5, 1, 1), (4, 3, 16, 0, 0), (5, 6, 17, 2, 1), (2, 2, 33, 1, 2)] {
            let (hp, wp, n) = (h + 2 * ph + 1, w + 2 * pw, 2);
            let spec = PadPairs { n, c, h, w, ph, pw, hp, wp };
            let code = spec.assemble().expect("assemble");
            let exec = ExecutableCode::new(&code).expect("map");
            // SAFETY: the code is a step kernel with the documented operands.
            let f: StepFn = unsafe { std::mem::transmute(exec.address(0).expect("address")) };
            let mut s = incept_ir::text::parse::SplitMix((c * 7 + w) as u64);
            let src: Vec<f32> = (0..n * c * h * w).map(|_| s.uniform() as f32 * 4.0 - 2.0).collect();
            let mut dst = vec![0x7777u16; spec.bytes() / 2];
            let args = [src.as_ptr() as *mut u8, dst.as_mut_ptr() as *mut u8];
            // SAFETY: src holds the images, dst the planes; tiles 1.. of all.
            unsafe { f(args.as_ptr(), 1, spec.tiles()) };
            for (i, &got) in dst.iter().enumerate() {
                let (row, rest) = (i / (wp * 2), i % (wp * 2));
                let (xp, half) = (rest / 2, rest % 2);
                let (plane, yp) = (row / hp, row % hp);
                let (img, pair) = (plane / spec.pairs(), plane % spec.pairs());
                let chn = 2 * pair + half;
                let want = if row == 0 {
                    0x7777
                } else if yp < ph || yp >= ph + h || xp < pw || xp >= pw + w || chn >= c {
                    0
                } else {
                    to_bf16(src[((img * c + chn) * h + yp - ph) * w + xp - pw])
                };
                assert_eq!(
                    got, want,
                    "c {c} h {h} w {w} pads {ph},{pw}: u16 {i} (plane {plane} row {yp} col {xp} half {half})"
                );
            }
        }
    }
}
