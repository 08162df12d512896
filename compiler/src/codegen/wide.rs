//! The wide tier on x86-64: machine code for AVX2 + FMA written with an assembler (`iced-x86`),
//! beside the Cranelift kernels, because Cranelift lowers no vector wider than 128 bits there.
//!
//! Only the innermost GEMM register tile is written this way. The loop nest around it (tiles,
//! K blocks, panels, partial tiles, the epilogue) stays in Cranelift and calls the microkernel
//! through a pointer it receives as an operand, so every other kernel family is unchanged.
//!
//! The microkernel (`rows` x 16 outputs, `rows` <= 6) computes
//! `C[r][0..16] (+)= sum_k A[k][r] * B[k][0..16]` over `kc` steps of K, with
//!
//! ```text
//! extern "sysv64" fn(a: *const f32,  // rdi: A panel at the first k: [k][MR_WIDE] floats
//!                    b: *const f32,  // rsi: B panel at the first k: [k][NR_WIDE] floats
//!                    c: *mut f32,    // rdx: the tile's first element
//!                    ldc: usize,     // rcx: bytes from one tile row to the next
//!                    kc: usize,      // r8:  K steps, at least 1
//!                    accumulate: usize) // r9: nonzero adds C's values to the sums
//! ```
//!
//! Twelve ymm accumulators (two per row), two B vectors and two broadcasts of A fill the 16 ymm
//! registers; K is unrolled four times. The code embeds no address, so it runs wherever the plan
//! is mapped. Only VEX encodings are used (no EVEX), so it runs on every AVX2 + FMA CPU.

use iced_x86::code_asm::*;

use super::{CodegenError, KernelSpec};

/// Rows of the AVX2 register tile (and of a packed A panel).
pub const MR_WIDE: usize = 6;
/// Columns of the AVX2 register tile (and of a packed B panel): two ymm vectors.
pub const NR_WIDE: usize = 16;

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

fn asm_err(e: IcedError) -> CodegenError {
    CodegenError::Compile { kernel: "avx2 microkernel".into(), msg: e.to_string() }
}

/// The AVX2 `rows` x `cols` microkernel (see the module documentation): `cols` is 16, or 8 for
/// the last panel of a GEMM whose N leaves 8 or fewer columns there (the panel is still packed
/// 16 wide; the kernel reads its first 8 columns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Avx2Microkernel {
    pub rows: usize,
    pub cols: usize,
}

impl Avx2Microkernel {
    /// Assembles the microkernel.
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        let rows = self.rows;
        assert!((1..=MR_WIDE).contains(&rows), "an AVX2 tile has 1 to {MR_WIDE} rows");
        assert!(self.cols == 8 || self.cols == NR_WIDE, "an AVX2 tile has 8 or 16 columns");
        // Vectors per row: two for 16 columns, one for 8.
        let vecs = self.cols / 8;
        let acc = [ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11];
        let (b0, b1, s0, s1) = (ymm12, ymm13, ymm14, ymm15);
        let a_step = (MR_WIDE * 4) as i32;
        let b_step = (NR_WIDE * 4) as i32;
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        for r in 0..rows {
            for v in 0..vecs {
                x.vxorps(acc[2 * r + v], acc[2 * r + v], acc[2 * r + v]).map_err(asm_err)?;
            }
        }
        // One K step at byte offsets (da, db) from rdi / rsi. The two broadcasts alternate
        // registers so that a row's FMAs do not wait for the next row's broadcast.
        let step = |x: &mut CodeAssembler, da: i32, db: i32| -> Result<(), IcedError> {
            x.vmovups(b0, ymmword_ptr(rsi + db))?;
            if vecs == 2 {
                x.vmovups(b1, ymmword_ptr(rsi + db + 32))?;
            }
            for r in 0..rows {
                let s = if r % 2 == 0 { s0 } else { s1 };
                x.vbroadcastss(s, dword_ptr(rdi + da + 4 * r as i32))?;
                x.vfmadd231ps(acc[2 * r], b0, s)?;
                if vecs == 2 {
                    x.vfmadd231ps(acc[2 * r + 1], b1, s)?;
                }
            }
            Ok(())
        };
        let mut main = x.create_label();
        let mut tail = x.create_label();
        let mut tail_loop = x.create_label();
        let mut store = x.create_label();
        // Main loop: four K steps per iteration while at least four remain.
        x.cmp(r8, 4).map_err(asm_err)?;
        x.jb(tail).map_err(asm_err)?;
        x.set_label(&mut main).map_err(asm_err)?;
        x.prefetcht0(byte_ptr(rsi + 4 * b_step + 256)).map_err(asm_err)?;
        for u in 0..4 {
            step(&mut x, u * a_step, u * b_step).map_err(asm_err)?;
            if u == 1 {
                x.prefetcht0(byte_ptr(rsi + 4 * b_step + 320)).map_err(asm_err)?;
            }
        }
        x.add(rdi, 4 * a_step).map_err(asm_err)?;
        x.add(rsi, 4 * b_step).map_err(asm_err)?;
        x.sub(r8, 4).map_err(asm_err)?;
        x.cmp(r8, 4).map_err(asm_err)?;
        x.jae(main).map_err(asm_err)?;
        // Remaining K steps one at a time.
        x.set_label(&mut tail).map_err(asm_err)?;
        x.test(r8, r8).map_err(asm_err)?;
        x.jz(store).map_err(asm_err)?;
        x.set_label(&mut tail_loop).map_err(asm_err)?;
        step(&mut x, 0, 0).map_err(asm_err)?;
        x.add(rdi, a_step).map_err(asm_err)?;
        x.add(rsi, b_step).map_err(asm_err)?;
        x.dec(r8).map_err(asm_err)?;
        x.jnz(tail_loop).map_err(asm_err)?;
        // Add C when accumulating, then store the tile.
        x.set_label(&mut store).map_err(asm_err)?;
        let mut overwrite = x.create_label();
        x.test(r9, r9).map_err(asm_err)?;
        x.jz(overwrite).map_err(asm_err)?;
        x.mov(rax, rdx).map_err(asm_err)?;
        for r in 0..rows {
            for v in 0..vecs {
                x.vaddps(acc[2 * r + v], acc[2 * r + v], ymmword_ptr(rax + 32 * v as i32)).map_err(asm_err)?;
            }
            x.add(rax, rcx).map_err(asm_err)?;
        }
        x.set_label(&mut overwrite).map_err(asm_err)?;
        for r in 0..rows {
            for v in 0..vecs {
                x.vmovups(ymmword_ptr(rdx + 32 * v as i32), acc[2 * r + v]).map_err(asm_err)?;
            }
            x.add(rdx, rcx).map_err(asm_err)?;
        }
        x.vzeroupper().map_err(asm_err)?;
        x.ret().map_err(asm_err)?;
        x.assemble(0).map_err(asm_err)
    }
}

impl KernelSpec for Avx2Microkernel {
    fn name(&self) -> String {
        format!("avx2 microkernel {}x{}", self.rows, self.cols)
    }

    fn emit(&self, _: &mut super::builder::Kb) {
        unreachable!("the AVX2 microkernel is machine code (machine_code), not CLIF")
    }

    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
}

/// An AVX2 FMA peak probe: `iterations` rounds of 12 independent `vfmadd231ps ymm` chains, as
/// `extern "sysv64" fn(out: *mut f32, iterations: usize)` storing the sum of the chains.
#[derive(Clone, Debug)]
pub struct Avx2FmaLoop;

/// Independent FMA chains of the probe (two FMA ports x latency 4, with margin).
pub const PEAK_CHAINS: usize = 12;

impl Avx2FmaLoop {
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        let acc = [ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11];
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        for a in acc {
            x.vxorps(a, a, a).map_err(asm_err)?;
        }
        x.vxorps(ymm12, ymm12, ymm12).map_err(asm_err)?;
        x.vxorps(ymm13, ymm13, ymm13).map_err(asm_err)?;
        let mut top = x.create_label();
        x.set_label(&mut top).map_err(asm_err)?;
        for a in acc {
            x.vfmadd231ps(a, ymm12, ymm13).map_err(asm_err)?;
        }
        x.dec(rsi).map_err(asm_err)?;
        x.jnz(top).map_err(asm_err)?;
        for a in &acc[1..] {
            x.vaddps(ymm0, ymm0, *a).map_err(asm_err)?;
        }
        x.vmovups(ymmword_ptr(rdi), ymm0).map_err(asm_err)?;
        x.vzeroupper().map_err(asm_err)?;
        x.ret().map_err(asm_err)?;
        x.assemble(0).map_err(asm_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use incept_runtime::code::ExecutableCode;

    type Ukernel = unsafe extern "sysv64" fn(*const f32, *const f32, *mut f32, usize, usize, usize);

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = incept_ir::text::parse::SplitMix(seed);
        (0..n).map(|_| s.uniform() as f32).collect()
    }

    /// Every row count, K counts around the unroll factor, with and without accumulation, into
    /// a C with a row stride wider than the tile: the microkernel against a plain product.
    #[test]
    fn avx2_microkernel_matches_a_plain_product() {
        if !host_has_avx2() {
            println!("skipped: this CPU has no AVX2 + FMA");
            return;
        }
        for (rows, cols) in (1..=MR_WIDE).flat_map(|r| [(r, 8), (r, NR_WIDE)]) {
            let code = Avx2Microkernel { rows, cols }.assemble().expect("assemble");
            let exec = ExecutableCode::new(&code).expect("map");
            // SAFETY: the code is a function with the documented signature.
            let f: Ukernel = unsafe { std::mem::transmute(exec.address(0).expect("address")) };
            for kc in [1, 2, 3, 4, 5, 7, 8, 9, 17, 64, 255] {
                for accumulate in [0, 1] {
                    let a = values(kc * MR_WIDE, 1 + kc as u64);
                    let b = values(kc * NR_WIDE, 2 + kc as u64);
                    let ldc = 20;
                    let c0 = values(8 * ldc, 3);
                    let mut c = c0.clone();
                    // SAFETY: the panels hold kc steps, C holds `rows` rows of `ldc` floats.
                    unsafe { f(a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc * 4, kc, accumulate) };
                    for r in 0..8 {
                        for j in 0..ldc {
                            let want = if r < rows && j < cols {
                                let dot: f32 = (0..kc).map(|k| a[k * MR_WIDE + r] * b[k * NR_WIDE + j]).sum();
                                dot + if accumulate == 1 { c0[r * ldc + j] } else { 0.0 }
                            } else {
                                c0[r * ldc + j]
                            };
                            let got = c[r * ldc + j];
                            assert!(
                                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                "{rows}x{cols} kc {kc} acc {accumulate}: C[{r}][{j}] = {got}, want {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
