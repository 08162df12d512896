//! The int8 register tile in 256-bit code, for CPUs without AVX512-VNNI: AVX-VNNI's VEX
//! VPDPBUSD where the CPU has it (Alder Lake and later clients), else AVX2's VPMADDWD on 16-bit
//! halves (Haswell to Zen 3). Same operands, signature and requantisation as the AVX-512 tile
//! (`int8.rs`), so the GEMM driver and the quad panels of B serve all three; only A's packing
//! differs for VPMADDWD ([`super::int8_layout::pack_pair_a`]).
//!
//! - AVX-VNNI: three rows by 32 columns (twelve ymm accumulators, a B vector, three A
//!   broadcasts), a quad of K per VPDPBUSD as on AVX-512.
//! - AVX2: VPMADDUBSW would saturate its 16-bit pair sums (255 x 127 x 2 > 32767), which is
//!   why ONNX Runtime's AVX2 path offers `reduce_range`; the tile stays exact instead by
//!   splitting each B dword's four bytes into the even ones (k0, k2) and the odd ones (k1, k3)
//!   as 16-bit lanes (an AND and a 16-bit shift) and multiplying each by the matching pair of
//!   16-bit weights with VPMADDWD, whose i32 pair sums cannot overflow. Two rows by 32 columns
//!   (eight accumulators, four A broadcasts, the two halves, the byte mask, a product).
//!
//! A tile of up to twelve rows (the A panel's) runs as chunks of those rows, each over the
//! whole K: the B panel (128 bytes a quad) stays in L1 between them. Only VEX encodings, so
//! the code runs where AVX2 (and AVX-VNNI for that form) does.

use iced_x86::code_asm::*;

use super::CodegenError;
use super::int8_layout::{Int8Out, MR_INT8, QUAD_ROW_BYTES};
use super::wide::{YMM, asm_err};

/// The low halves of [`YMM`].
const XMM: [AsmRegisterXmm; 12] = [xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11];

/// Assembles the 256-bit tile: `rows` (1..=12) of 32 columns, the first `valid` stored, with
/// AVX-VNNI (`vnni`) or AVX2 alone. Signature and operands as [`super::int8::VnniMicrokernel`].
pub fn assemble(rows: usize, valid: usize, out: Int8Out, vnni: bool) -> Result<Vec<u8>, CodegenError> {
    assert!((1..=MR_INT8).contains(&rows), "an int8 tile has 1 to {MR_INT8} rows");
    assert!((1..=32).contains(&valid), "an int8 tile stores 1 to 32 columns");
    let chunk = if vnni { 3 } else { 2 };
    // Bytes of one A row per quad step, and of the panel's twelve.
    let a_row = if vnni { 4 } else { 8 };
    let a_step = (MR_INT8 * a_row) as i32;
    let mut x = CodeAssembler::new(64).map_err(asm_err)?;
    // r10 / r11 keep A and B; rdi / rsi / rax run through a chunk's K.
    x.mov(r10, rdi).map_err(asm_err)?;
    x.mov(r11, rsi).map_err(asm_err)?;
    let acc = |r: usize, v: usize| YMM[4 * r + v];
    let mut r0 = 0;
    while r0 < rows {
        let rr = chunk.min(rows - r0);
        for r in 0..rr {
            for v in 0..4 {
                x.vpxor(acc(r, v), acc(r, v), acc(r, v)).map_err(asm_err)?;
            }
        }
        if !vnni {
            // The low-byte mask of each 16-bit lane (ymm14; the epilogue reuses it).
            x.mov(eax, 0x00FF_00FFu32).map_err(asm_err)?;
            x.vmovd(xmm14, eax).map_err(asm_err)?;
            x.vpbroadcastd(YMM[14], xmm14).map_err(asm_err)?;
        }
        x.lea(rdi, ptr(r10 + (r0 * a_row) as i32)).map_err(asm_err)?;
        x.mov(rsi, r11).map_err(asm_err)?;
        x.mov(rax, r8).map_err(asm_err)?;
        let mut top = x.create_label();
        if vnni {
            // ymm12..14 the rows' broadcasts, ymm15 a B vector.
            let bv = YMM[15];
            x.set_label(&mut top).map_err(asm_err)?;
            for r in 0..rr {
                x.vpbroadcastd(YMM[12 + r], dword_ptr(rdi + (a_row * r) as i32)).map_err(asm_err)?;
            }
            for v in 0..4 {
                x.vmovdqu(bv, ymmword_ptr(rsi + 32 * v as i32)).map_err(asm_err)?;
                for r in 0..rr {
                    x.vpdpbusd(acc(r, v), bv, YMM[12 + r]).map_err(asm_err)?;
                }
            }
        } else {
            // ymm8..11 the rows' even and odd weight pairs, ymm12 the even bytes (then the
            // product), ymm13 the odd ones, ymm14 the low-byte mask of each 16-bit lane,
            // ymm15 a product.
            let (even, odd, mask, prod) = (YMM[12], YMM[13], YMM[14], YMM[15]);
            x.set_label(&mut top).map_err(asm_err)?;
            for r in 0..rr {
                x.vpbroadcastd(YMM[8 + 2 * r], dword_ptr(rdi + (a_row * r) as i32)).map_err(asm_err)?;
                x.vpbroadcastd(YMM[9 + 2 * r], dword_ptr(rdi + (a_row * r + 4) as i32)).map_err(asm_err)?;
            }
            for v in 0..4 {
                x.vmovdqu(odd, ymmword_ptr(rsi + 32 * v as i32)).map_err(asm_err)?;
                x.vpand(even, odd, mask).map_err(asm_err)?;
                x.vpsrlw(odd, odd, 8).map_err(asm_err)?;
                for r in 0..rr {
                    x.vpmaddwd(prod, even, YMM[8 + 2 * r]).map_err(asm_err)?;
                    x.vpaddd(acc(r, v), acc(r, v), prod).map_err(asm_err)?;
                    x.vpmaddwd(prod, odd, YMM[9 + 2 * r]).map_err(asm_err)?;
                    x.vpaddd(acc(r, v), acc(r, v), prod).map_err(asm_err)?;
                }
            }
        }
        x.add(rdi, a_step).map_err(asm_err)?;
        x.add(rsi, QUAD_ROW_BYTES as i32).map_err(asm_err)?;
        x.dec(rax).map_err(asm_err)?;
        x.jnz(top).map_err(asm_err)?;
        epilogue(&mut x, r0, rr, valid, out)?;
        r0 += rr;
    }
    x.vzeroupper().map_err(asm_err)?;
    x.ret().map_err(asm_err)?;
    x.assemble(0).map_err(asm_err)
}

/// Bias, then the sums or the requantised bytes of rows `r0 .. r0 + rr` (accumulators ymm0..11,
/// four per row) into C at `rdx + row ldc` (rcx). ymm12..15, rax and rdi are free here (r10
/// and r11 hold A and B for the next chunk).
fn epilogue(x: &mut CodeAssembler, r0: usize, rr: usize, valid: usize, out: Int8Out) -> Result<(), CodegenError> {
    let acc = |r: usize, v: usize| YMM[4 * r + v];
    let tmp = YMM[15];
    let lanes = |v: usize| valid.saturating_sub(8 * v).min(8);
    for r in 0..rr {
        x.vpbroadcastd(tmp, dword_ptr(r9 + 4 * (r0 + r) as i32)).map_err(asm_err)?;
        for v in 0..4 {
            x.vpaddd(acc(r, v), acc(r, v), tmp).map_err(asm_err)?;
        }
    }
    // rax: the first row's C.
    if r0 == 0 {
        x.mov(rax, rdx).map_err(asm_err)?;
    } else {
        x.imul_3(rax, rcx, r0 as i32).map_err(asm_err)?;
        x.add(rax, rdx).map_err(asm_err)?;
    }
    match out {
        Int8Out::Sums => {
            for r in 0..rr {
                for v in (0..4).filter(|&v| lanes(v) > 0) {
                    let a = acc(r, v);
                    if lanes(v) == 8 {
                        x.vmovdqu(ymmword_ptr(rax + 32 * v as i32), a).map_err(asm_err)?;
                        continue;
                    }
                    let xa = XMM[4 * r + v];
                    for i in 0..lanes(v) {
                        if i == 4 {
                            x.vextracti128(xa, a, 1).map_err(asm_err)?;
                        }
                        x.vpextrd(dword_ptr(rax + (32 * v + 4 * i) as i32), xa, (i % 4) as u32).map_err(asm_err)?;
                    }
                }
                x.add(rax, rcx).map_err(asm_err)?;
            }
        }
        Int8Out::Requant { signed } => {
            let (lo, hi, zp) = (YMM[12], YMM[13], YMM[14]);
            // consts (the stack's second argument) and mult (its first).
            x.mov(rdi, qword_ptr(rsp + 16)).map_err(asm_err)?;
            x.vbroadcastss(lo, dword_ptr(rdi)).map_err(asm_err)?;
            x.vbroadcastss(hi, dword_ptr(rdi + 4)).map_err(asm_err)?;
            x.vpbroadcastd(zp, dword_ptr(rdi + 8)).map_err(asm_err)?;
            x.mov(rdi, qword_ptr(rsp + 8)).map_err(asm_err)?;
            for r in 0..rr {
                x.vbroadcastss(tmp, dword_ptr(rdi + 4 * (r0 + r) as i32)).map_err(asm_err)?;
                for v in (0..4).filter(|&v| lanes(v) > 0) {
                    let a = acc(r, v);
                    super::int8_arith::requantize(x, a, [tmp, lo, hi, zp])?;
                    // In range now, so the saturating packs only narrow: dwords to words within
                    // each 128-bit lane, the two lanes' quads together, words to bytes.
                    let xa = XMM[4 * r + v];
                    if signed {
                        x.vpackssdw(a, a, a).map_err(asm_err)?;
                        x.vpermq(a, a, 0x08).map_err(asm_err)?;
                        x.vpacksswb(xa, xa, xa).map_err(asm_err)?;
                    } else {
                        x.vpackusdw(a, a, a).map_err(asm_err)?;
                        x.vpermq(a, a, 0x08).map_err(asm_err)?;
                        x.vpackuswb(xa, xa, xa).map_err(asm_err)?;
                    }
                    if lanes(v) == 8 {
                        x.vmovq(qword_ptr(rax + 8 * v as i32), xa).map_err(asm_err)?;
                    } else {
                        for i in 0..lanes(v) {
                            x.vpextrb(byte_ptr(rax + (8 * v + i) as i32), xa, i as u32).map_err(asm_err)?;
                        }
                    }
                }
                x.add(rax, rcx).map_err(asm_err)?;
            }
        }
    }
    Ok(())
}
