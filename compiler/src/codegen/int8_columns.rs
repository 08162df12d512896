//! The last few columns of an int8 GEMM on AVX512-VNNI, as vectors of rows.
//!
//! A map of 7x7 has 49 positions: a 32-column panel and a second of 17, which the 32-column
//! tile computes whole (64 columns' work for 49). Splitting the second as the 16-column tile and
//! one column leaves the column: here one register holds the column's sums for the panel's 12
//! rows, VPDPBUSD taking the column's four B bytes broadcast (unsigned) by the 12 rows' quads of
//! A as one vector (signed: the packed panel holds them side by side). One VPDPBUSD a quad
//! instead of twelve, so a 7x7 conv costs 32 + 16 + about 2 columns' work, not 64. Where a
//! panel has 1 to 4 columns the kernel takes them all (a classifier's single row, a 14x14
//! map's last 4 of 196 positions).

use iced_x86::code_asm::*;

use super::CodegenError;
use super::builder::Kb;
use super::int8_layout::{Int8Out, MR_INT8, QUAD_ROW_BYTES};
use super::wide::{ZMM, asm_err};

/// Most columns the kernel takes (more go to the tiles).
pub const MAX_COLUMNS: usize = 4;

/// `cols` (1..=4) columns of `rows` (1..=12) outputs, with the VNNI tile's ABI
/// ([`super::int8::VnniMicrokernel`]): A a packed 12-row panel, B a quad panel at the first
/// column's four bytes (rows 128 bytes apart), C at the first column's byte of the first row.
/// The sums start at the bias, are requantised with each row's multiplier, and each row's byte
/// is stored alone (`ldc` apart).
#[derive(Clone, Debug)]
pub struct VnniColumns {
    pub rows: usize,
    pub cols: usize,
    pub out: Int8Out,
}

impl VnniColumns {
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        assert!((1..=MR_INT8).contains(&self.rows), "1 to {MR_INT8} rows");
        assert!((1..=MAX_COLUMNS).contains(&self.cols), "1 to {MAX_COLUMNS} columns");
        assert!(matches!(self.out, Int8Out::Requant { .. }), "the column kernel requantises");
        let (a_step, b_step) = ((MR_INT8 * 4) as i32, QUAD_ROW_BYTES as i32);
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        // Four sums a column, one per unrolled quad step (a single chain would wait on each
        // VPDPBUSD's latency), added at the end.
        let acc = |c: usize, u: usize| ZMM[4 * c + u];
        let (a, b) = (ZMM[16], ZMM[17]);
        // k1: the rows' dword lanes (A's panel quad is 12 dwords; loads past it are masked).
        x.mov(eax, (1u32 << self.rows) - 1).map_err(asm_err)?;
        x.kmovw(k1, eax).map_err(asm_err)?;
        for c in 0..self.cols {
            x.vmovdqu32(acc(c, 0).k1().z(), zmmword_ptr(r9)).map_err(asm_err)?;
            for u in 1..4 {
                x.vpxord(acc(c, u), acc(c, u), acc(c, u)).map_err(asm_err)?;
            }
        }
        let step = |x: &mut CodeAssembler, u: i32| -> Result<(), CodegenError> {
            x.vmovdqu32(a.k1().z(), zmmword_ptr(rdi + u * a_step)).map_err(asm_err)?;
            for c in 0..self.cols {
                x.vpbroadcastd(b, dword_ptr(rsi + u * b_step + 4 * c as i32)).map_err(asm_err)?;
                x.vpdpbusd(acc(c, u as usize), b, a).map_err(asm_err)?;
            }
            Ok(())
        };
        let (mut main, mut tail, mut tail_loop, mut store) =
            (x.create_label(), x.create_label(), x.create_label(), x.create_label());
        x.cmp(r8, 4).map_err(asm_err)?;
        x.jb(tail).map_err(asm_err)?;
        x.set_label(&mut main).map_err(asm_err)?;
        for u in 0..4 {
            step(&mut x, u)?;
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
        step(&mut x, 0)?;
        x.add(rdi, a_step).map_err(asm_err)?;
        x.add(rsi, b_step).map_err(asm_err)?;
        x.dec(r8).map_err(asm_err)?;
        x.jnz(tail_loop).map_err(asm_err)?;
        x.set_label(&mut store).map_err(asm_err)?;
        for c in 0..self.cols {
            x.vpaddd(acc(c, 0), acc(c, 0), acc(c, 1)).map_err(asm_err)?;
            x.vpaddd(acc(c, 2), acc(c, 2), acc(c, 3)).map_err(asm_err)?;
            x.vpaddd(acc(c, 0), acc(c, 0), acc(c, 2)).map_err(asm_err)?;
        }
        let (mult, lo, hi, zp) = (ZMM[18], ZMM[19], ZMM[20], ZMM[21]);
        x.mov(rax, qword_ptr(rsp + 16)).map_err(asm_err)?;
        x.vbroadcastss(lo, dword_ptr(rax)).map_err(asm_err)?;
        x.vbroadcastss(hi, dword_ptr(rax + 4)).map_err(asm_err)?;
        x.vpbroadcastd(zp, dword_ptr(rax + 8)).map_err(asm_err)?;
        x.mov(rax, qword_ptr(rsp + 8)).map_err(asm_err)?;
        x.vmovups(mult.k1().z(), zmmword_ptr(rax)).map_err(asm_err)?;
        for c in 0..self.cols {
            super::int8_arith::requantize(&mut x, acc(c, 0), [mult, lo, hi, zp])?;
            // In range now: the low bytes, to the red zone, then one row at a time.
            x.vpmovdb(xmmword_ptr(rsp - 16), acc(c, 0)).map_err(asm_err)?;
            x.lea(r10, qword_ptr(rdx + c as i32)).map_err(asm_err)?;
            for r in 0..self.rows {
                x.movzx(eax, byte_ptr(rsp - 16 + r as i32)).map_err(asm_err)?;
                x.mov(byte_ptr(r10), al).map_err(asm_err)?;
                if r + 1 < self.rows {
                    x.add(r10, rcx).map_err(asm_err)?;
                }
            }
        }
        x.vzeroupper().map_err(asm_err)?;
        x.ret().map_err(asm_err)?;
        x.assemble(0).map_err(asm_err)
    }
}

impl super::KernelSpec for VnniColumns {
    fn name(&self) -> String {
        format!("avx512vnni int8 columns {}x{} {:?}", self.rows, self.cols, self.out)
    }
    fn emit(&self, _: &mut Kb) {
        unreachable!("the column kernel is machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
    fn features(&self) -> &'static [&'static str] {
        &["avx512bw", "avx512vnni"]
    }
}

/// Columns' work of an int8 GEMM of `n` columns on the 512-bit tiles, in tile columns: whole
/// 32-column panels, and the last one as a few columns (about two each: a column costs one
/// VPDPBUSD a quad for its rows, against the tile's twelve for sixteen columns, and a
/// broadcast), 16 (the 16-column tile), 16 and a few columns, or 32.
pub fn column_work(n: usize) -> usize {
    let r = n % 32;
    n / 32 * 32
        + match r {
            0 => 0,
            1..=MAX_COLUMNS => 2 * r,
            _ if r <= 16 => 16,
            _ if r - 16 <= MAX_COLUMNS => 16 + 2 * (r - 16),
            _ => 32,
        }
}

#[cfg(test)]
mod tests {
    use incept_ir::DType;
    use incept_ir::ops::quant::{qrange, requantize};
    use incept_runtime::code::ExecutableCode;

    use super::*;
    use crate::codegen::int8_layout::pack_quad_a;

    type Kernel =
        unsafe extern "sysv64" fn(*const i8, *const u8, *mut u8, usize, usize, *const i32, *const f32, *const f32);

    /// Every row count by 1-4 columns, K around the unrolled four quad steps, both output signs,
    /// the columns 16 on in a 32-column panel: every stored byte the reference's requantisation
    /// of the exact sum, nothing else in C written.
    #[test]
    fn int8_columns_match_the_reference() {
        if !(std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("avx512vnni")) {
            println!("skipped: this CPU has no AVX512-VNNI");
            return;
        }
        let mut s = incept_ir::text::parse::SplitMix(11);
        let mut cases = 0;
        for rows in 1..=MR_INT8 {
            for cols in 1..=MAX_COLUMNS {
                for signed in [false, true] {
                    let out = Int8Out::Requant { signed };
                    let code = VnniColumns { rows, cols, out }.assemble().expect("assemble");
                    let exec = ExecutableCode::new(&code).expect("map");
                    // SAFETY: the code is a function with the documented signature.
                    let f: Kernel = unsafe { std::mem::transmute(exec.address(0).expect("address")) };
                    for k in [1usize, 3, 4, 5, 15, 16, 17, 33, 130] {
                        let a: Vec<i8> = (0..MR_INT8 * k).map(|_| (s.next_u64() % 256) as u8 as i8).collect();
                        let b: Vec<u8> = (0..k * 32).map(|_| (s.next_u64() % 256) as u8).collect();
                        let pa = pack_quad_a(&a, MR_INT8, k);
                        let quads = k.div_ceil(4);
                        let mut pb = vec![0u8; quads * QUAD_ROW_BYTES];
                        for kk in 0..k {
                            for c in 0..32 {
                                pb[(kk / 4) * QUAD_ROW_BYTES + c * 4 + kk % 4] = b[kk * 32 + c];
                            }
                        }
                        let bias: Vec<i32> = (0..MR_INT8).map(|r| (r as i32 - 6) * 1000).collect();
                        let mult: Vec<f32> = (0..MR_INT8).map(|r| 1.5e-5 * 4f32.powi(r as i32 % 8)).collect();
                        let (dtype, zp) = if signed { (DType::I8, -3) } else { (DType::U8, 121) };
                        let (lo, hi) = qrange(dtype).expect("range");
                        let consts = [(lo - zp) as f32, (hi - zp) as f32, f32::from_bits(zp as u32)];
                        let ldc = 37;
                        let before = vec![0xA5u8; (MR_INT8 + 1) * ldc];
                        let mut c = before.clone();
                        // SAFETY: the panels hold the padded K; C has MR + 1 rows of ldc bytes,
                        // the kernel's columns 16 .. 20 of them.
                        unsafe {
                            f(
                                pa.as_ptr(),
                                pb.as_ptr().add(64),
                                c.as_mut_ptr().add(16),
                                ldc,
                                quads,
                                bias.as_ptr(),
                                mult.as_ptr(),
                                consts.as_ptr(),
                            )
                        };
                        for r in 0..=MR_INT8 {
                            for j in 0..ldc {
                                let at = r * ldc + j;
                                if r >= rows || !(16..16 + cols).contains(&j) {
                                    assert_eq!(c[at], before[at], "{rows}x{cols} k {k}: C[{r}][{j}] written");
                                    continue;
                                }
                                let sum = (0..k).fold(bias[r], |acc, kk| {
                                    acc.wrapping_add(a[r * k + kk] as i32 * b[kk * 32 + j] as i32)
                                });
                                let want = requantize(sum, mult[r], zp, (lo, hi));
                                let got = if signed { c[at] as i8 as i32 } else { c[at] as i32 };
                                assert_eq!(got, want, "{rows}x{cols} k {k} {out:?}: C[{r}][{j}] (sum {sum})");
                            }
                        }
                        cases += 1;
                    }
                }
            }
        }
        println!("{cases} column kernels checked");
    }

    /// The work estimate the lowering compares: whole panels, two a column, 16, 16 and two a
    /// column, 32.
    #[test]
    fn column_work_counts_the_split_panel() {
        assert_eq!(column_work(64), 64);
        assert_eq!(column_work(49), 32 + 16 + 2);
        assert_eq!(column_work(51), 32 + 16 + 6);
        assert_eq!(column_work(53), 64);
        assert_eq!(column_work(1), 2);
        assert_eq!(column_work(196), 192 + 8);
        assert_eq!(column_work(201), 192 + 16);
        assert_eq!(column_work(63), 64);
    }
}
