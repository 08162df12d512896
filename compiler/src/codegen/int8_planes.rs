//! Stride-1 windowed int8 convs on the VNNI tile without an im2col matrix (implicit GEMM).
//!
//! The input becomes quad planes: plane g holds input channels 4g .. 4g + 4 of the padded input,
//! four bytes per position, `hp = oh + (kh - 1) dh` rows of `wp = ow + (kw - 1) dw` positions,
//! the fill (the flipped zero point) in the padding and in channels past the input's. The conv
//! then runs over padded positions `q = oy wp + ox` with `ox < wp`: tap (ky, kx) of output q
//! reads position `q + ky dh wp + kx dw` of every plane, so a tile's 32 columns are, for each
//! tap and plane, 128 contiguous bytes a constant distance from tap (0, 0)'s. The tile walks
//! taps and planes ([`PlanesWalk`]) where it would walk a packed panel, with K ordered tap-major
//! (k = (ky kw + kx) 4 planes + channel; the weights are packed so at compile time).
//!
//! The columns `ox >= ow` compute windows that wrap into the next row: garbage, which the
//! copy-out ([`PlanesCopyOutSpec`]) drops. That is `(kw - 1) dw / wp` more tile work (2/58 on a
//! 56x56 3x3 conv; none on 14x14 and 7x7 maps, whose last panel was partly idle anyway) in
//! exchange for the byte matrix (K times the positions, written then read twice) and its
//! packing: the planes are the input's size.

use iced_x86::code_asm::*;

use super::CodegenError;
use super::builder::Kb;
use super::int8_depthwise::RowsCopyKernel;
use super::kernels::conv::Geom;
use super::wide::{ZMM, asm_err};

/// Bytes a quad plane stays under: four of them are one displacement of the tile's walk.
const PLANE_LIMIT: usize = (i32::MAX / 8) as usize;

/// How the tile walks B in quad planes: for each tap row, each tap column, each plane (K's
/// order), 32 columns of 4 bytes at the tap's offset in the plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanesWalk {
    pub kh: usize,
    pub kw: usize,
    /// Bytes from one tap row to the next (`dh wp 4`) and one tap column to the next (`dw 4`).
    pub row_step: usize,
    pub col_step: usize,
    /// Planes (channel quads) and the bytes from one to the next.
    pub planes: usize,
    pub plane_bytes: usize,
}

impl PlanesWalk {
    /// Quad steps of K: every tap of every plane.
    pub fn quads(&self) -> usize {
        self.kh * self.kw * self.planes
    }
    /// Bytes of one image's planes.
    pub fn image_bytes(&self) -> usize {
        self.planes * self.plane_bytes
    }
}

/// A stride-1 conv's geometry in quad planes.
#[derive(Clone, Debug)]
pub struct QuadPlanes {
    pub n: usize,
    pub c: usize,
    pub g: Geom,
    pub flip: bool,
    pub fill: u8,
}

impl QuadPlanes {
    /// Whether a conv runs this way: stride 1, and a window (a 1x1 conv's input is its own
    /// panel already).
    pub fn applies(g: &Geom) -> bool {
        (g.sh, g.sw) == (1, 1) && (g.kh, g.kw, g.ph, g.pw) != (1, 1, 0, 0)
    }
    /// Whether the tile's walk can address the planes (displacements of four planes in i32): a
    /// map too large for that keeps the byte matrix.
    pub fn addressable(&self) -> bool {
        self.walk().plane_bytes < PLANE_LIMIT
    }
    /// Positions in a padded row, and padded rows.
    pub fn wp(&self) -> usize {
        self.g.ow + (self.g.kw - 1) * self.g.dw
    }
    pub fn hp(&self) -> usize {
        self.g.oh + (self.g.kh - 1) * self.g.dh
    }
    /// The tile's columns: every padded position an output row starts its windows at.
    pub fn cols(&self) -> usize {
        self.g.oh * self.wp()
    }
    pub fn planes(&self) -> usize {
        self.c.div_ceil(4)
    }
    /// Positions of a plane: the last column panel's 32 reads from its last tap, rounded to
    /// whole 16-position stores.
    fn positions(&self) -> usize {
        let reach = (self.g.kh - 1) * self.g.dh * self.wp() + (self.g.kw - 1) * self.g.dw;
        // At least the padded rows and the left padding past them (a padding wider than the
        // window leaves the data's end there).
        let rows = self.hp() * self.wp() + self.g.pw;
        (self.cols().div_ceil(32) * 32 + reach).max(rows).next_multiple_of(16)
    }
    pub fn walk(&self) -> PlanesWalk {
        PlanesWalk {
            kh: self.g.kh,
            kw: self.g.kw,
            row_step: self.g.dh * self.wp() * 4,
            col_step: self.g.dw * 4,
            planes: self.planes(),
            plane_bytes: self.positions() * 4,
        }
    }
    /// Weights `[m][c][kh][kw]` in the walk's K order, `[m][kh][kw][4 planes]` (zero for
    /// channels past c).
    pub fn reorder_weights(&self, w: &[i8], m: usize) -> Vec<i8> {
        let (taps, c4) = (self.g.kh * self.g.kw, self.planes() * 4);
        let mut out = vec![0i8; m * taps * c4];
        for r in 0..m {
            for chan in 0..self.c {
                for t in 0..taps {
                    out[(r * taps + t) * c4 + chan] = w[(r * self.c + chan) * taps + t];
                }
            }
        }
        out
    }
    /// The input rows that land in the padded rows, and the columns of each.
    fn data(&self) -> (usize, usize) {
        let rows = self.g.h.min(self.hp().saturating_sub(self.g.ph));
        let cols = self.g.w.min(self.wp().saturating_sub(self.g.pw));
        (rows, cols)
    }
    /// The packing's kernels: a whole plane's, then (where c is not a multiple of 4) the
    /// last, partial one's.
    pub fn kernels(&self) -> Vec<QuadPlaneKernel> {
        let mut v = vec![QuadPlaneKernel { q: self.clone(), chans: 4.min(self.c) }];
        if self.c > 4 && !self.c.is_multiple_of(4) {
            v.push(QuadPlaneKernel { q: self.clone(), chans: self.c % 4 });
        }
        v
    }
}

/// Packs the input into quad planes (see the module doc). Operands: X, the planes, then the
/// kernels ([`QuadPlanes::kernels`]). One tile per (image, plane).
#[derive(Clone, Debug)]
pub struct QuadPlanesSpec {
    pub q: QuadPlanes,
}

impl QuadPlanesSpec {
    pub fn tiles(&self) -> usize {
        self.q.n * self.q.planes()
    }
}

impl super::KernelSpec for QuadPlanesSpec {
    fn name(&self) -> String {
        let g = &self.q.g;
        format!("quad planes {}x{} of {}x{} c{} -> {}x{}", g.kh, g.kw, g.h, g.w, self.q.c, self.q.hp(), self.q.wp())
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, y] = [kb.operand(0), kb.operand(1)];
        let planes = self.q.planes();
        let partial = self.q.kernels().len() > 1;
        let (full_k, last_k) = (kb.operand(2), if partial { Some(kb.operand(3)) } else { None });
        let (plane, bytes) = ((self.q.g.h * self.q.g.w) as i64, self.q.walk().plane_bytes as i64);
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (img, p) = kb.divmod(t, planes as i64);
            let src = {
                let first = kb.muli(img, self.q.c as i64);
                let four = kb.muli(p, 4);
                let first = kb.add(first, four);
                let o = kb.muli(first, plane);
                kb.elem(x, o, 1)
            };
            let dst = {
                let o = kb.muli(t, bytes);
                kb.elem(y, o, 1)
            };
            match last_k {
                Some(last) => {
                    use cranelift_codegen::ir::InstBuilder;
                    let is_last = kb.eqi(p, planes as i64 - 1);
                    let f = kb.b.ins().select(is_last, last, full_k);
                    kb.call_code(f, &[src, dst]);
                }
                None => kb.call_code(full_k, &[src, dst]),
            }
        });
    }
}

/// One quad plane from `chans` (1..=4) channel planes: `extern "sysv64" fn(src: *const u8,
/// plane: *mut u8)`, src at the first channel's plane (the others `h w` apart). Per data row,
/// 16 positions at a time: each channel's bytes widened to dwords, shifted into their byte,
/// combined, top bits flipped where asked (the missing channels' bytes zero); masked loads
/// and stores at the row's end. The padding between rows, above and below, is the fill.
#[derive(Clone, Debug)]
pub struct QuadPlaneKernel {
    pub q: QuadPlanes,
    pub chans: usize,
}

/// Stores the fill dword `v` over `count` positions from `[base + at]` (16 a store, the last
/// masked by k4; a loop on r8 / r9 past eight stores).
fn fill_positions(
    x: &mut CodeAssembler,
    base: AsmRegister64,
    at: usize,
    count: usize,
    v: AsmRegisterZmm,
) -> Result<(), CodegenError> {
    if count == 0 {
        return Ok(());
    }
    let (whole, rest) = (count / 16, count % 16);
    x.lea(r8, qword_ptr(base + at as i32)).map_err(asm_err)?;
    if whole > 8 {
        let mut top = x.create_label();
        x.mov(r9, whole as u64).map_err(asm_err)?;
        x.set_label(&mut top).map_err(asm_err)?;
        x.vmovdqu32(zmmword_ptr(r8), v).map_err(asm_err)?;
        x.add(r8, 64).map_err(asm_err)?;
        x.dec(r9).map_err(asm_err)?;
        x.jnz(top).map_err(asm_err)?;
    } else {
        for s in 0..whole {
            x.vmovdqu32(zmmword_ptr(r8 + 64 * s as i32), v).map_err(asm_err)?;
        }
        x.add(r8, 64 * whole as i32).map_err(asm_err)?;
    }
    if rest > 0 {
        x.mov(eax, (1u32 << rest) - 1).map_err(asm_err)?;
        x.kmovw(k4, eax).map_err(asm_err)?;
        x.vmovdqu32(zmmword_ptr(r8).k4(), v).map_err(asm_err)?;
    }
    Ok(())
}

impl QuadPlaneKernel {
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        let q = &self.q;
        let (wp, positions) = (q.wp(), q.positions());
        let (rows, cols) = q.data();
        let plane = (q.g.h * q.g.w) as i32;
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        let (fill, flip) = (ZMM[28], ZMM[29]);
        let fill4 = u32::from_le_bytes([q.fill; 4]);
        x.mov(eax, fill4).map_err(asm_err)?;
        x.vpbroadcastd(fill, eax).map_err(asm_err)?;
        // The loaded channels' top bits to flip. The bytes of channels past the input's stay
        // zero: their weights are zero.
        let flip4 = u32::from_le_bytes(std::array::from_fn(|c| if c < self.chans && q.flip { 0x80 } else { 0 }));
        x.mov(eax, flip4).map_err(asm_err)?;
        x.vpbroadcastd(flip, eax).map_err(asm_err)?;
        let first = q.g.ph.min(q.hp()) * wp + q.g.pw.min(wp);
        if rows == 0 || cols == 0 {
            fill_positions(&mut x, rsi, 0, positions, fill)?;
        } else {
            fill_positions(&mut x, rsi, 0, first, fill)?;
            let chunks = cols.div_ceil(16);
            let tail = cols - 16 * (chunks - 1);
            // k1: the last chunk's bytes (loads) and positions (stores) alike.
            x.mov(eax, if tail == 16 { 0xffff } else { (1u32 << tail) - 1 }).map_err(asm_err)?;
            x.kmovw(k1, eax).map_err(asm_err)?;
            x.add(rsi, 4 * first as i32).map_err(asm_err)?;
            let mut top = x.create_label();
            x.mov(rcx, rows as u64).map_err(asm_err)?;
            x.set_label(&mut top).map_err(asm_err)?;
            for j in 0..chunks {
                let masked = j + 1 == chunks && tail < 16;
                let lanes: Vec<AsmRegisterZmm> = (0..self.chans).map(|c| ZMM[c]).collect();
                for (c, &z) in lanes.iter().enumerate() {
                    let at = xmmword_ptr(rdi + c as i32 * plane + 16 * j as i32);
                    if masked {
                        let xr = XMM[c];
                        x.vmovdqu8(xr.k1().z(), at).map_err(asm_err)?;
                        x.vpmovzxbd(z, xr).map_err(asm_err)?;
                    } else {
                        x.vpmovzxbd(z, at).map_err(asm_err)?;
                    }
                    if c > 0 {
                        x.vpslld(z, z, 8 * c as u32).map_err(asm_err)?;
                    }
                }
                let acc = ZMM[0];
                for &z in &lanes[1..] {
                    x.vpord(acc, acc, z).map_err(asm_err)?;
                }
                if q.flip {
                    x.vpxord(acc, acc, flip).map_err(asm_err)?;
                }
                let at = zmmword_ptr(rsi + 64 * j as i32);
                x.vmovdqu32(if masked { at.k1() } else { at }, acc).map_err(asm_err)?;
            }
            // The right padding of this row and the left padding of the next.
            fill_positions(&mut x, rsi, 4 * cols, wp - cols, fill)?;
            x.add(rdi, q.g.w as i32).map_err(asm_err)?;
            x.add(rsi, 4 * wp as i32).map_err(asm_err)?;
            x.dec(rcx).map_err(asm_err)?;
            x.jnz(top).map_err(asm_err)?;
            // rsi is at the first padded row after the data's, column pw: the rest is fill.
            let done = first + rows * wp;
            fill_positions(&mut x, rsi, 0, positions - done, fill)?;
        }
        x.vzeroupper().map_err(asm_err)?;
        x.ret().map_err(asm_err)?;
        x.assemble(0).map_err(asm_err)
    }
}

const XMM: [AsmRegisterXmm; 4] = [xmm0, xmm1, xmm2, xmm3];

impl super::KernelSpec for QuadPlaneKernel {
    fn name(&self) -> String {
        let g = &self.q.g;
        format!(
            "int8 quad plane of {} channels {}x{} p{}x{} -> {}x{} avx512bw",
            self.chans,
            g.h,
            g.w,
            g.ph,
            g.pw,
            self.q.hp(),
            self.q.wp()
        )
    }
    fn emit(&self, _: &mut Kb) {
        unreachable!("the quad plane is machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
    fn features(&self) -> &'static [&'static str] {
        &["avx512bw"]
    }
}

/// The tile's output over padded positions (`[image][m][oh][wp]`) into the conv's
/// (`[image][m][oh][ow]`), dropping the columns past `ow`. Operands: the padded output, Y, the
/// rows copy. One tile per (image, output channel).
#[derive(Clone, Debug)]
pub struct PlanesCopyOutSpec {
    pub images: usize,
    pub m: usize,
    pub oh: usize,
    pub ow: usize,
    pub wp: usize,
}

impl PlanesCopyOutSpec {
    pub fn tiles(&self) -> usize {
        self.images * self.m
    }
    pub fn kernel(&self) -> RowsCopyKernel {
        RowsCopyKernel { rows: self.oh, len: self.ow, from: self.wp, to: self.ow, avx2: false }
    }
}

impl super::KernelSpec for PlanesCopyOutSpec {
    fn name(&self) -> String {
        format!("int8 planes copy-out {}x{} of {}", self.oh, self.ow, self.wp)
    }

    fn emit(&self, kb: &mut Kb) {
        let [src, dst, f] = [kb.operand(0), kb.operand(1), kb.operand(2)];
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let from = {
                let o = kb.muli(t, (self.oh * self.wp) as i64);
                kb.elem(src, o, 1)
            };
            let to = {
                let o = kb.muli(t, (self.oh * self.ow) as i64);
                kb.elem(dst, o, 1)
            };
            kb.call_code(f, &[from, to]);
        });
    }
}

/// The tile's K loop over quad planes (see [`PlanesWalk`]): for each tap in turn (unrolled),
/// the planes (r11 counting, four a turn) from the tap's position (rsi; r10 the planes' start),
/// A moving on one quad step a plane. `step(x, da, db, shift)` is one quad step at A + da and
/// B + db + 4 shift, rsi + db 64-byte aligned. Uses r10, r11.
pub fn planes_walk(
    x: &mut CodeAssembler,
    w: &PlanesWalk,
    a_step: i32,
    step: impl Fn(&mut CodeAssembler, i32, i32, u32) -> Result<(), CodegenError>,
) -> Result<(), CodegenError> {
    assert!(w.plane_bytes < PLANE_LIMIT, "quad planes the lowering checked (`QuadPlanes::addressable`)");
    let pb = w.plane_bytes as i32;
    assert!(pb % 64 == 0, "quad planes start on cache lines");
    let (whole, rest) = (w.planes / 4, w.planes % 4);
    // A streams; prefetched as the packed panel's tile does (B's planes are the input's size
    // and stay in cache).
    const AHEAD: i32 = 48;
    x.mov(r10, rsi).map_err(asm_err)?;
    for ky in 0..w.kh {
        for kx in 0..w.kw {
            let at = (ky * w.row_step + kx * w.col_step) as i32;
            let (line, shift) = (at / 64 * 64, (at % 64 / 4) as u32);
            x.lea(rsi, qword_ptr(r10 + line)).map_err(asm_err)?;
            if whole > 0 {
                let mut planes = x.create_label();
                x.mov(r11, whole as u64).map_err(asm_err)?;
                x.set_label(&mut planes).map_err(asm_err)?;
                for u in 0..4 {
                    if u * 64 < 4 * a_step {
                        x.prefetcht0(byte_ptr(rdi + AHEAD * a_step + u * 64)).map_err(asm_err)?;
                    }
                    step(x, u * a_step, u * pb, shift)?;
                }
                x.add(rdi, 4 * a_step).map_err(asm_err)?;
                x.add(rsi, 4 * pb).map_err(asm_err)?;
                x.dec(r11).map_err(asm_err)?;
                x.jnz(planes).map_err(asm_err)?;
            }
            for u in 0..rest as i32 {
                step(x, u * a_step, u * pb, shift)?;
            }
            if rest > 0 {
                x.add(rdi, rest as i32 * a_step).map_err(asm_err)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use incept_runtime::code::ExecutableCode;

    use super::*;

    /// The plane the kernel must write: the byte of channel c at padded position q, for every
    /// position of the plane.
    fn expected(q: &QuadPlanes, chans: usize, src: &[u8]) -> Vec<u8> {
        let (wp, hp, g) = (q.wp() as i64, q.hp() as i64, &q.g);
        let mut out = vec![0u8; q.positions() * 4];
        for (p, quad) in out.chunks_mut(4).enumerate() {
            let (yp, xp) = (p as i64 / wp, p as i64 % wp);
            let (y, x) = (yp - g.ph as i64, xp - g.pw as i64);
            let inside = yp < hp && (0..g.h as i64).contains(&y) && (0..g.w as i64).contains(&x);
            for (c, byte) in quad.iter_mut().enumerate() {
                *byte = match (inside, c < chans) {
                    (false, _) => q.fill,
                    (true, false) => 0,
                    (true, true) => src[c * g.h * g.w + (y * g.w as i64 + x) as usize] ^ if q.flip { 0x80 } else { 0 },
                };
            }
        }
        out
    }

    /// Every geometry of small maps (rows and columns around a 16-position store), windows,
    /// dilations and pads (none, asymmetric, wider than the window), 1-4 channels, both signs:
    /// the plane equals the expected one, and nothing is written past it.
    #[test]
    fn quad_planes_hold_the_padded_input() {
        if !std::arch::is_x86_feature_detected!("avx512bw") {
            println!("skipped: this CPU has no AVX512-BW");
            return;
        }
        let mut cases = 0;
        for (h, w) in [(1, 1), (2, 5), (3, 16), (5, 6), (4, 17), (5, 33), (7, 7)] {
            for (kh, kw, d) in [(1, 3, 1), (3, 1, 1), (3, 1, 2), (3, 3, 1), (2, 3, 2)] {
                // (1, 1, 0, 1) on a 5x6 map by a 3x1 window: 32 padded positions end a panel
                // exactly, and the left padding past the last row outreaches its taps.
                for (ph, pw, pb, pr) in [(0, 0, 0, 0), (1, 1, 0, 1), (1, 2, 0, 1), (3, 4, 3, 4)] {
                    let oh = (h + ph + pb) as i64 - (d * (kh - 1)) as i64;
                    let ow = (w + pw + pr) as i64 - (d * (kw - 1)) as i64;
                    if oh < 1 || ow < 1 {
                        continue;
                    }
                    let (oh, ow) = (oh as usize, ow as usize);
                    let g = Geom { h, w, oh, ow, kh, kw, sh: 1, sw: 1, ph, pw, dh: d, dw: d };
                    for (chans, flip) in [(1, false), (3, true), (4, false), (4, true)] {
                        let q = QuadPlanes { n: 1, c: chans, g: g.clone(), flip, fill: 0x5a };
                        let src: Vec<u8> = (0..chans * h * w).map(|i| (i * 37 + 11) as u8).collect();
                        let kernel = QuadPlaneKernel { q: q.clone(), chans };
                        let code = kernel.assemble().expect("assemble");
                        let exec = ExecutableCode::new(&code).expect("load");
                        // SAFETY: the code has the kernel's signature and this CPU runs AVX-512 BW.
                        let f: extern "sysv64" fn(*const u8, *mut u8) =
                            unsafe { std::mem::transmute(exec.address(0).expect("code")) };
                        let bytes = q.positions() * 4;
                        let mut out = vec![0xeeu8; bytes + 256];
                        f(src.as_ptr(), out.as_mut_ptr());
                        let what = format!("{h}x{w} window {kh}x{kw} d{d} pads {ph},{pw},{pb},{pr} c{chans}");
                        assert_eq!(out[..bytes], expected(&q, chans, &src)[..], "{what}");
                        assert!(out[bytes..].iter().all(|&b| b == 0xee), "{what}: written past the plane");
                        cases += 1;
                    }
                }
            }
        }
        println!("{cases} quad planes checked");
    }
}
