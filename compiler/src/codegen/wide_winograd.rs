//! The AVX-512 Winograd F(2x2, 3x3) input transform of sixteen tiles that lie side by side in
//! one tile row, wholly inside the input: one zmm lane per tile, so `B^T d B` is sixteen
//! vector adds and subtracts with no transposes, and each of the 16 transformed values of the
//! sixteen tiles is one 64-byte store into the GEMM's packed B panel. The Cranelift input
//! kernel keeps every other group of tiles (border, row ends) and calls this for the rest.
//!
//! ```text
//! extern "sysv64" fn(x: *const f32,  // rdi: the first tile's patch corner in the first channel
//!                    v: *mut f32,    // rsi: its transformed values (e = 0) in the first channel
//!                    channels: usize, // rdx: channels to transform, at least 1
//!                    lanes: usize)   // rcx: bit l set: tile l is stored (the others belong to
//!                                    //      the next panel, which transforms them itself)
//! ```
//!
//! Column s of a patch row is, for the sixteen tiles, the even (s = 0, 2) or odd (s = 1, 3)
//! lanes of the 32 floats from column 0 (s = 0, 1) or column 2 (s = 2, 3): two loads and a
//! permute each. The arithmetic is the f32x4 kernel's, operation for operation (its column
//! step multiplies by +-1 in a fused multiply-add, which is exact): the same bits.

use iced_x86::code_asm::*;

use super::wide::{Ops, ZMM, asm_err};
use super::{CodegenError, KernelSpec};

/// The byte strides of one conv's input transform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WideWinoInput {
    /// Bytes from one input row to the next.
    pub row_bytes: i32,
    /// Bytes from one input channel plane to the next.
    pub plane_bytes: i32,
    /// Bytes from one transformed value's matrix to the next (e to e + 1).
    pub e_stride: i32,
    /// Bytes from one channel's row of a panel to the next (NR floats).
    pub channel_bytes: i32,
}

/// Registers: the patch columns d[r][s] (16), one column's row combinations (4), the two
/// permute index vectors, two loads and the output.
const D: usize = 0;
const T: usize = 16;
const EVEN: usize = 24;
const ODD: usize = 25;
const LO: usize = 26;
const HI: usize = 27;
const OUT: usize = 28;

impl WideWinoInput {
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        let ops = Ops { wide: true };
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        // Index vectors 0, 2, .., 30 and 1, 3, .., 31, through the red zone (a leaf function).
        for (reg, first) in [(EVEN, 0), (ODD, 1)] {
            for l in 0..16 {
                x.mov(dword_ptr(rsp - 64 + 4 * l), 2 * l + first).map_err(asm_err)?;
            }
            ops.load(&mut x, reg, rsp - 64)?;
        }
        x.kmovw(k1, ecx).map_err(asm_err)?;
        let mut top = x.create_label();
        x.set_label(&mut top).map_err(asm_err)?;
        // d[r][s] in register D + 4r + s.
        for r in 0..4i32 {
            for half in 0..2i32 {
                let at = r * self.row_bytes + 8 * half;
                ops.load(&mut x, LO, rdi + at)?;
                ops.load(&mut x, HI, rdi + at + 64)?;
                for (s_off, idx) in [(0, EVEN), (1, ODD)] {
                    let d = D + (4 * r + 2 * half + s_off) as usize;
                    x.vmovaps(ZMM[d], ZMM[LO]).map_err(asm_err)?;
                    x.vpermt2ps(ZMM[d], ZMM[idx], ZMM[HI]).map_err(asm_err)?;
                }
            }
        }
        let d = |r: usize, s: usize| ZMM[D + 4 * r + s];
        // Rows (B^T d), column by column: t0 = d0 - d2, t1 = d1 + d2, t2 = d2 - d1, t3 = d1 - d3,
        // written back over the column (d[k][s] := t[k][s]).
        for s in 0..4 {
            let t = |k: usize| ZMM[T + k];
            x.vsubps(t(0), d(0, s), d(2, s)).map_err(asm_err)?;
            x.vaddps(t(1), d(1, s), d(2, s)).map_err(asm_err)?;
            x.vsubps(t(2), d(2, s), d(1, s)).map_err(asm_err)?;
            x.vsubps(t(3), d(1, s), d(3, s)).map_err(asm_err)?;
            for k in 0..4 {
                x.vmovaps(d(k, s), t(k)).map_err(asm_err)?;
            }
        }
        // Columns ((.) B) for each row k: out0 = t0 - t2, out1 = t1 + t2, out2 = t2 - t1,
        // out3 = t1 - t3; e = 4k + s.
        for k in 0..4 {
            let store = |x: &mut CodeAssembler, s: usize| -> Result<(), CodegenError> {
                let e = (4 * k + s) as i32;
                x.vmovups(zmmword_ptr(rsi + e * self.e_stride).k1(), ZMM[OUT]).map_err(asm_err)
            };
            x.vsubps(ZMM[OUT], d(k, 0), d(k, 2)).map_err(asm_err)?;
            store(&mut x, 0)?;
            x.vaddps(ZMM[OUT], d(k, 1), d(k, 2)).map_err(asm_err)?;
            store(&mut x, 1)?;
            x.vsubps(ZMM[OUT], d(k, 2), d(k, 1)).map_err(asm_err)?;
            store(&mut x, 2)?;
            x.vsubps(ZMM[OUT], d(k, 1), d(k, 3)).map_err(asm_err)?;
            store(&mut x, 3)?;
        }
        x.add(rdi, self.plane_bytes).map_err(asm_err)?;
        x.add(rsi, self.channel_bytes).map_err(asm_err)?;
        x.dec(rdx).map_err(asm_err)?;
        x.jnz(top).map_err(asm_err)?;
        x.vzeroupper().map_err(asm_err)?;
        x.ret().map_err(asm_err)?;
        x.assemble(0).map_err(asm_err)
    }
}

impl KernelSpec for WideWinoInput {
    fn name(&self) -> String {
        "avx512 winograd input x16".into()
    }

    fn emit(&self, _: &mut super::builder::Kb) {
        unreachable!("a wide Winograd input transform is machine code (machine_code), not CLIF")
    }

    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::wide::host_has_avx512;
    use incept_runtime::code::ExecutableCode;

    type Transform = unsafe extern "sysv64" fn(*const f32, *mut f32, usize, usize);

    /// Two channels of sixteen tiles from a 3 x 40 x 36 input, the last three lanes masked off:
    /// every transformed value against `B^T d B` written out with the f32x4 kernel's
    /// operations, bit for bit, and nothing else of the output written.
    #[test]
    fn sixteen_tiles_match_the_plain_transform() {
        if !host_has_avx512() {
            println!("skipped: this CPU has no AVX-512");
            return;
        }
        let (h, w, channels) = (40usize, 36usize, 3usize);
        let mut s = incept_ir::text::parse::SplitMix(5);
        let xs: Vec<f32> = (0..channels * h * w).map(|_| s.uniform() as f32 * 4.0 - 2.0).collect();
        let (nr, e_stride) = (32usize, 32 * channels * 4 + 64);
        let k = WideWinoInput {
            row_bytes: (w * 4) as i32,
            plane_bytes: (h * w * 4) as i32,
            e_stride: e_stride as i32,
            channel_bytes: (nr * 4) as i32,
        };
        let code = k.assemble().expect("assemble");
        let exec = ExecutableCode::new(&code).expect("map");
        // SAFETY: the code is a function with the documented signature.
        let f: Transform = unsafe { std::mem::transmute(exec.address(0).expect("address")) };
        let (iy0, ix0) = (3usize, 1usize);
        let mut v = vec![f32::NAN; 16 * e_stride / 4];
        let stored = 13;
        // SAFETY: sixteen patches from (iy0, ix0) lie inside two channels, and V holds 16
        // matrices of e_stride bytes with two channels' rows of NR floats.
        unsafe { f(xs[iy0 * w + ix0..].as_ptr(), v.as_mut_ptr(), 2, (1 << stored) - 1) };
        for chan in 0..2 {
            for tile in 0..stored {
                let at = |r: usize, c: usize| xs[chan * h * w + (iy0 + r) * w + ix0 + 2 * tile + c];
                // rows[k][c]: row k of B^T d, column c.
                let col =
                    |c: usize| [at(0, c) - at(2, c), at(1, c) + at(2, c), at(2, c) - at(1, c), at(1, c) - at(3, c)];
                let cols = [col(0), col(1), col(2), col(3)];
                let rows: Vec<[f32; 4]> = (0..4).map(|k| [cols[0][k], cols[1][k], cols[2][k], cols[3][k]]).collect();
                for (kk, row) in rows.iter().enumerate() {
                    let want = [row[0] - row[2], row[1] + row[2], row[2] - row[1], row[1] - row[3]];
                    for (sidx, want) in want.into_iter().enumerate() {
                        let e = 4 * kk + sidx;
                        let got = v[e * e_stride / 4 + chan * nr + tile];
                        assert_eq!(got.to_bits(), want.to_bits(), "channel {chan} tile {tile} e {e}: {got} vs {want}");
                    }
                }
            }
        }
        // The masked lanes, lanes 16..32 of each row and the third channel's rows are untouched.
        for e in 0..16 {
            for chan in 0..3 {
                for lane in 0..nr {
                    if chan < 2 && lane < stored {
                        continue;
                    }
                    assert!(
                        v[e * e_stride / 4 + chan * nr + lane].is_nan(),
                        "e {e} channel {chan} lane {lane} written"
                    );
                }
            }
        }
    }
}
