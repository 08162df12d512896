//! The bf16 planes of a stride-2 conv on few input channels (a stem) seen as a stride-1 conv
//! over the input's phases, so that it runs implicitly (no im2col) like the stride-1 convs.
//!
//! Output (oy, ox) of a stride-2 conv reads x[c][2 oy + ky - pt][2 ox + kx - pl]. With
//! ky = 2u + a and kx = 2v + b, that is phase (c, a, b) at row oy + u, column ox + v, where
//! phase (c, a, b)[i][j] = x[c][2i + a - pt][2j + b - pl]: a stride-1 conv with a
//! ceil(kh / 2) x ceil(kw / 2) window over 4c channels ordered (c, a, b), whose weights are the
//! original ones at (2u + a, 2v + b) (zero past the window). The two phases b = 0 and b = 1 of
//! one (c, a) are a channel pair, and their pair row j is (x[r][2j - pl], x[r][2j + 1 - pl]):
//! two neighbours of input row r = 2i + a - pt. A pair-plane row is thus the padded input row
//! rounded to bf16 in order, which is what this kernel writes.

use iced_x86::code_asm::*;

use super::bf16::{plane_rows_kernel, zero_dwords};
use super::wide::asm_err;
use super::{CodegenError, KernelSpec};

/// A step kernel (`extern "C" fn(args, begin, end)`, args = [source, destination]) writing the
/// planes of one f32 image `[c][h][w]` as `[2c][hp][wp][2]` bf16: plane (c, a) row i holds input
/// row 2i + a - pt with `pl` zeros before it, two columns per dword, zeros past the row and in
/// rows outside the image (the GEMM's last column panel reads past its row into them). One
/// tile per plane row, consecutive tiles the planes of one row (as the GEMMs split their work).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhasePairs {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Top and left pads of the stride-2 conv.
    pub pt: usize,
    pub pl: usize,
    pub hp: usize,
    /// Dwords (column pairs) per plane row.
    pub wp: usize,
}

impl PhasePairs {
    /// Channel pairs of the stride-1 conv: one per (channel, row phase).
    pub fn pairs(&self) -> usize {
        2 * self.c
    }
    pub fn tiles(&self) -> usize {
        self.pairs() * self.hp
    }
    pub fn plane_bytes(&self) -> usize {
        self.hp * self.wp * 4
    }
    pub fn bytes(&self) -> usize {
        self.pairs() * self.plane_bytes()
    }

    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        assert!(self.pl < 16, "a left pad under 16 columns");
        let e = asm_err;
        let wp = self.wp as u64;
        let chan = (self.h * self.w * 4) as i32;
        plane_rows_kernel(|x, next| {
            // tile = i * pairs + pair, pair = c * 2 + a.
            x.mov(rax, rsi).map_err(e)?;
            x.xor(edx, edx).map_err(e)?;
            x.mov(rcx, self.pairs() as u64).map_err(e)?;
            x.div(rcx).map_err(e)?;
            // rax = i, rdx = pair. The destination row: (pair * hp + i) * wp dwords.
            x.imul_3(rbx, rdx, self.hp as i32).map_err(e)?;
            x.add(rbx, rax).map_err(e)?;
            x.imul_3(rbx, rbx, (self.wp * 4) as i32).map_err(e)?;
            x.lea(r10, qword_ptr(r9 + rbx)).map_err(e)?;
            zero_dwords(x, r10, wp)?;
            // The input row r = 2i + a - pt of channel c = pair / 2, a = pair % 2, if inside.
            x.mov(r12, rdx).map_err(e)?;
            x.shr(r12, 1).map_err(e)?;
            x.and(edx, 1).map_err(e)?;
            x.lea(rax, qword_ptr(rdx + rax * 2)).map_err(e)?;
            x.sub(rax, self.pt as i32).map_err(e)?;
            x.cmp(rax, self.h as i32).map_err(e)?;
            x.jae(next).map_err(e)?; // also catches r < 0 (wrapped)
            x.imul_3(rax, rax, (self.w * 4) as i32).map_err(e)?;
            x.imul_3(r12, r12, chan).map_err(e)?;
            x.add(rax, r12).map_err(e)?;
            x.lea(r11, qword_ptr(r8 + rax)).map_err(e)?;
            // Padded column t = input column t - pl: 32 at a time into 16 dwords, the loads masked to
            // the row (columns before 0 and from w on are zeros); stores stop at wp dwords.
            let padded = (self.w + self.pl) as i64;
            let mut t0 = 0i64;
            while t0 < padded && ((t0 / 2) as u64) < wp {
                for half in 0..2i64 {
                    let lo = t0 + 16 * half;
                    let lanes: u32 = (0..16)
                        .filter(|&l| {
                            let col = lo + l - self.pl as i64;
                            (0..self.w as i64).contains(&col)
                        })
                        .fold(0, |m, l| m | (1 << l));
                    let reg = if half == 0 { zmm0 } else { zmm1 };
                    if lanes == 0 {
                        x.vpxord(reg, reg, reg).map_err(e)?;
                    } else {
                        x.mov(ecx, lanes).map_err(e)?;
                        x.kmovw(k1, ecx).map_err(e)?;
                        let off = ((lo - self.pl as i64) * 4) as i32;
                        x.vmovups(reg.k1().z(), zmmword_ptr(r11 + off)).map_err(e)?;
                    }
                }
                // Sixteen bf16 from zmm0 then sixteen from zmm1, in column order.
                x.vcvtne2ps2bf16(zmm2, zmm1, zmm0).map_err(e)?;
                let dwords = (wp - (t0 / 2) as u64).min(16) as u32;
                x.mov(ecx, if dwords == 16 { 0xffff } else { (1u32 << dwords) - 1 }).map_err(e)?;
                x.kmovw(k1, ecx).map_err(e)?;
                x.vmovdqu32(zmmword_ptr(r10 + (t0 * 2) as i32).k1(), zmm2).map_err(e)?;
                t0 += 32;
            }
            Ok(())
        })
    }
}

impl KernelSpec for PhasePairs {
    fn name(&self) -> String {
        format!("bf16 phase pairs {}x{}x{} pad {}x{}", self.c, self.h, self.w, self.hp, self.wp)
    }
    fn emit(&self, _: &mut super::builder::Kb) {
        unreachable!("phase pairs are machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::bf16::{Bf16Tier, to_bf16};
    use incept_runtime::code::ExecutableCode;

    /// Every plane row against the layout in plain Rust: channel counts 1-4, odd and even sizes
    /// and left pads, rows past the image, dwords past the padded row.
    #[test]
    fn phase_pairs_match_the_layout() {
        if !Bf16Tier::Avx512Bf16.runs_here() {
            println!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        type Step = unsafe extern "C" fn(*const *mut u8, usize, usize);
        for (c, h, w, pt, pl) in [
            (3usize, 9usize, 9usize, 3usize, 3usize),
            (1, 5, 40, 1, 1),
            (2, 6, 17, 0, 0),
            (4, 3, 33, 1, 2),
            (3, 11, 64, 3, 3),
        ] {
            let wp = (w + pl).div_ceil(2) + 3;
            let hp = h.div_ceil(2) + 4;
            let spec = PhasePairs { c, h, w, pt, pl, hp, wp };
            let code = spec.assemble().expect("assemble");
            let exec = ExecutableCode::new(&code).expect("map");
            // SAFETY: the code is a step kernel with the documented signature.
            let f: Step = unsafe { std::mem::transmute(exec.address(0).expect("address")) };
            let mut s = incept_ir::text::parse::SplitMix(7);
            let src: Vec<f32> = (0..c * h * w).map(|_| s.uniform() as f32 - 0.5).collect();
            let mut dst = vec![0xAAAAu16; spec.bytes() / 2];
            let args = [src.as_ptr() as *mut u8, dst.as_mut_ptr() as *mut u8];
            // SAFETY: the buffers hold the image and every plane.
            unsafe { f(args.as_ptr(), 0, spec.tiles()) };
            for pair in 0..2 * c {
                let (chn, a) = (pair / 2, pair % 2);
                for i in 0..hp {
                    for j in 0..2 * wp {
                        let r = (2 * i + a) as i64 - pt as i64;
                        let col = j as i64 - pl as i64;
                        let want = if (0..h as i64).contains(&r) && (0..w as i64).contains(&col) {
                            to_bf16(src[(chn * h + r as usize) * w + col as usize])
                        } else {
                            0
                        };
                        let got = dst[(pair * hp + i) * wp * 2 + j];
                        assert_eq!(got, want, "c{c} {h}x{w} pads {pt},{pl}: pair {pair} row {i} half-column {j}");
                    }
                }
            }
        }
    }
}
