//! A test-only interpreter of the x86-64 subset the AMX kernels use, so that they are checked on
//! machines without AMX (this VM's CPU has none): the tile configuration, the microkernel's K
//! loop over tiles and its f32 epilogue run instruction by instruction, decoded with iced-x86,
//! on real buffers, and the results are compared with a plain product. It executes only the
//! instructions it knows and panics on any other, so a kernel that grows an instruction
//! needs the emulator to grow too.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// The machine state.
pub struct Cpu {
    gpr: [u64; 16],
    zmm: [[u8; 64]; 32],
    tiles: [[u8; 1024]; 8],
    /// Rows and bytes per row of each tile, from LDTILECFG; None before it.
    config: Option<[(usize, usize); 8]>,
    zf: bool,
    /// Instructions executed (a runaway loop ends the test).
    pub steps: usize,
}

fn gpr_index(r: Register) -> usize {
    let full = r.full_register();
    [
        Register::RAX,
        Register::RCX,
        Register::RDX,
        Register::RBX,
        Register::RSP,
        Register::RBP,
        Register::RSI,
        Register::RDI,
        Register::R8,
        Register::R9,
        Register::R10,
        Register::R11,
        Register::R12,
        Register::R13,
        Register::R14,
        Register::R15,
    ]
    .iter()
    .position(|&g| g == full)
    .unwrap_or_else(|| panic!("not a general register: {r:?}"))
}

fn f32s(v: &[u8; 64]) -> [f32; 16] {
    std::array::from_fn(|i| f32::from_le_bytes(v[4 * i..4 * i + 4].try_into().expect("4 bytes")))
}

fn bytes(v: [f32; 16]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (i, x) in v.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_le_bytes());
    }
    out
}

fn bf16(lo: u8, hi: u8) -> f32 {
    f32::from_bits(((hi as u32) << 8 | lo as u32) << 16)
}

impl Cpu {
    /// A machine whose stack is `stack` (rsp at its end, 64-byte aligned, minus a return slot).
    pub fn new(stack: &mut [u8]) -> Cpu {
        let top = (stack.as_mut_ptr() as u64 + stack.len() as u64 - 256) & !63;
        let mut gpr = [0u64; 16];
        gpr[4] = top;
        Cpu { gpr, zmm: [[0; 64]; 32], tiles: [[0; 1024]; 8], config: None, zf: false, steps: 0 }
    }

    pub fn set(&mut self, r: Register, v: u64) {
        self.gpr[gpr_index(r)] = v;
    }

    /// Writes a stack argument: the `n`th (0: the first past the return address).
    pub fn stack_arg(&mut self, n: usize, v: u64) {
        let at = self.gpr[4] + 8 + 8 * n as u64;
        // SAFETY: inside the stack buffer (256 bytes were left above rsp).
        unsafe { (at as *mut u64).write_unaligned(v) };
    }

    fn reg(&self, r: Register) -> u64 {
        let v = self.gpr[gpr_index(r)];
        match r.size() {
            8 => v,
            4 => v & 0xffff_ffff,
            2 => v & 0xffff,
            1 => v & 0xff,
            s => panic!("register size {s}"),
        }
    }

    fn write_reg(&mut self, r: Register, v: u64) {
        let i = gpr_index(r);
        self.gpr[i] = match r.size() {
            8 => v,
            4 => v & 0xffff_ffff,
            s => panic!("a {s}-byte register write"),
        };
    }

    fn addr(&self, ins: &Instruction) -> u64 {
        let mut a = ins.memory_displacement64();
        if ins.memory_base() != Register::None {
            a = a.wrapping_add(self.reg(ins.memory_base()));
        }
        if ins.memory_index() != Register::None {
            a = a.wrapping_add(self.reg(ins.memory_index()).wrapping_mul(ins.memory_index_scale() as u64));
        }
        a
    }

    fn zmm_index(r: Register) -> usize {
        r.number()
    }

    fn tile_index(r: Register) -> usize {
        (r as usize) - (Register::TMM0 as usize)
    }

    /// Runs `code` from its start until the `ret` that leaves it.
    ///
    /// # Safety
    /// The code's memory operands must point into live buffers of the test (the same contract
    /// as running the code natively).
    pub unsafe fn run(&mut self, code: &[u8]) {
        let mut decoded = vec![];
        let mut d = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
        while d.can_decode() {
            let ins = d.decode();
            if ins.is_invalid() {
                break;
            }
            decoded.push(ins);
        }
        let at = |ip: u64| decoded.iter().position(|i| i.ip() == ip).expect("a branch into an instruction");
        let mut pc = 0;
        loop {
            self.steps += 1;
            assert!(self.steps < 50_000_000, "runaway kernel");
            let ins = decoded[pc];
            pc += 1;
            // SAFETY (every access below): the caller's contract.
            unsafe {
                match ins.mnemonic() {
                    Mnemonic::Push => {
                        let v = self.reg(ins.op0_register());
                        self.gpr[4] -= 8;
                        (self.gpr[4] as *mut u64).write_unaligned(v);
                    }
                    Mnemonic::Pop => {
                        let v = (self.gpr[4] as *const u64).read_unaligned();
                        self.gpr[4] += 8;
                        self.write_reg(ins.op0_register(), v);
                    }
                    Mnemonic::Mov => match (ins.op0_kind(), ins.op1_kind()) {
                        (OpKind::Register, OpKind::Register) => {
                            self.write_reg(ins.op0_register(), self.reg(ins.op1_register()))
                        }
                        (OpKind::Register, OpKind::Memory) => {
                            let v = (self.addr(&ins) as *const u64).read_unaligned();
                            self.write_reg(ins.op0_register(), v);
                        }
                        (OpKind::Register, _) => self.write_reg(ins.op0_register(), ins.immediate(1)),
                        (OpKind::Memory, _) => {
                            let a = self.addr(&ins);
                            let v = ins.immediate(1);
                            match ins.memory_size().size() {
                                1 => (a as *mut u8).write(v as u8),
                                2 => (a as *mut u16).write_unaligned(v as u16),
                                4 => (a as *mut u32).write_unaligned(v as u32),
                                8 => (a as *mut u64).write_unaligned(v),
                                s => panic!("a {s}-byte store"),
                            }
                        }
                        k => panic!("mov {k:?}"),
                    },
                    Mnemonic::Add | Mnemonic::Sub | Mnemonic::And | Mnemonic::Shr | Mnemonic::Test | Mnemonic::Dec => {
                        let a = self.reg(ins.op0_register());
                        let b = match ins.op_count() {
                            1 => 1,
                            _ if ins.op1_kind() == OpKind::Register => self.reg(ins.op1_register()),
                            _ => ins.immediate(1),
                        };
                        let r = match ins.mnemonic() {
                            Mnemonic::Add => a.wrapping_add(b),
                            Mnemonic::Sub | Mnemonic::Dec => a.wrapping_sub(b),
                            Mnemonic::And | Mnemonic::Test => a & b,
                            _ => a >> b,
                        };
                        self.zf = r == 0;
                        if ins.mnemonic() != Mnemonic::Test {
                            self.write_reg(ins.op0_register(), r);
                        }
                    }
                    Mnemonic::Jne => {
                        if !self.zf {
                            pc = at(ins.near_branch_target());
                        }
                    }
                    Mnemonic::Je => {
                        if self.zf {
                            pc = at(ins.near_branch_target());
                        }
                    }
                    Mnemonic::Ret => return,
                    Mnemonic::Vzeroupper => {}
                    Mnemonic::Ldtilecfg => {
                        let a = self.addr(&ins) as *const u8;
                        assert_eq!(a.read(), 1, "palette 1");
                        self.config = Some(std::array::from_fn(|t| {
                            let colsb = (a.add(16 + 2 * t) as *const u16).read_unaligned() as usize;
                            (a.add(48 + t).read() as usize, colsb)
                        }));
                    }
                    Mnemonic::Tilerelease => self.config = None,
                    Mnemonic::Tilezero => {
                        assert!(self.config.is_some(), "tilezero before ldtilecfg");
                        self.tiles[Self::tile_index(ins.op0_register())] = [0; 1024];
                    }
                    Mnemonic::Tileloadd | Mnemonic::Tilestored => {
                        let load = ins.mnemonic() == Mnemonic::Tileloadd;
                        let t = Self::tile_index(if load { ins.op0_register() } else { ins.op1_register() });
                        let (rows, colsb) = self.config.expect("a tile instruction before ldtilecfg")[t];
                        let base = self.addr(&ins) - self.reg(ins.memory_index()) * ins.memory_index_scale() as u64;
                        let stride = self.reg(ins.memory_index()) * ins.memory_index_scale() as u64;
                        for r in 0..rows {
                            let p = (base + r as u64 * stride) as *mut u8;
                            for c in 0..colsb {
                                if load {
                                    self.tiles[t][r * 64 + c] = p.add(c).read();
                                } else {
                                    p.add(c).write(self.tiles[t][r * 64 + c]);
                                }
                            }
                        }
                    }
                    Mnemonic::Tdpbf16ps => {
                        let (c, a, b) = (
                            Self::tile_index(ins.op0_register()),
                            Self::tile_index(ins.op1_register()),
                            Self::tile_index(ins.op2_register()),
                        );
                        let cfg = self.config.expect("tdpbf16ps before ldtilecfg");
                        let (m, n, k) = (cfg[c].0, cfg[c].1 / 4, cfg[a].1 / 4);
                        assert!(cfg[b].0 == k && cfg[b].1 == n * 4 && cfg[a].0 == m, "tile shapes disagree");
                        for i in 0..m {
                            for j in 0..n {
                                let mut acc =
                                    f32::from_le_bytes(self.tiles[c][i * 64 + 4 * j..][..4].try_into().expect("4"));
                                for p in 0..k {
                                    let (ax, bx) = (&self.tiles[a][i * 64 + 4 * p..], &self.tiles[b][p * 64 + 4 * j..]);
                                    acc += bf16(ax[0], ax[1]) * bf16(bx[0], bx[1]);
                                    acc += bf16(ax[2], ax[3]) * bf16(bx[2], bx[3]);
                                }
                                self.tiles[c][i * 64 + 4 * j..][..4].copy_from_slice(&acc.to_le_bytes());
                            }
                        }
                    }
                    Mnemonic::Vbroadcastss => {
                        let v = (self.addr(&ins) as *const f32).read_unaligned();
                        self.zmm[Self::zmm_index(ins.op0_register())] = bytes([v; 16]);
                    }
                    Mnemonic::Vmovups => {
                        if ins.op0_kind() == OpKind::Memory {
                            let p = self.addr(&ins) as *mut [u8; 64];
                            p.write_unaligned(self.zmm[Self::zmm_index(ins.op1_register())]);
                        } else {
                            let p = self.addr(&ins) as *const [u8; 64];
                            self.zmm[Self::zmm_index(ins.op0_register())] = p.read_unaligned();
                        }
                    }
                    Mnemonic::Vaddps | Mnemonic::Vmaxps | Mnemonic::Vminps => {
                        let x = f32s(&self.zmm[Self::zmm_index(ins.op1_register())]);
                        let y = if ins.op2_kind() == OpKind::Memory {
                            f32s(&(self.addr(&ins) as *const [u8; 64]).read_unaligned())
                        } else {
                            f32s(&self.zmm[Self::zmm_index(ins.op2_register())])
                        };
                        // vmaxps/vminps return the second source when either is NaN or both are
                        // zeros, as the hardware does.
                        let r: [f32; 16] = std::array::from_fn(|i| match ins.mnemonic() {
                            Mnemonic::Vaddps => x[i] + y[i],
                            Mnemonic::Vmaxps => {
                                if x[i] > y[i] {
                                    x[i]
                                } else {
                                    y[i]
                                }
                            }
                            _ => {
                                if x[i] < y[i] {
                                    x[i]
                                } else {
                                    y[i]
                                }
                            }
                        });
                        self.zmm[Self::zmm_index(ins.op0_register())] = bytes(r);
                    }
                    m => panic!("the AMX emulator does not know {m:?} (code {:?} at {:#x})", ins.code(), ins.ip()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::bf16::{AmxMicrokernel, AmxTiles, Bf16Tier, MR_AMX, round_bf16, to_bf16};
    use crate::codegen::wide::{WideAct, WideEpilogue};

    /// Every row count, both widths, K around the 32-k tile step, every flag, with and without
    /// the epilogue (bias, bounds, residual): the emulated AMX microkernel against the f64
    /// product of its bf16 inputs, C rows outside the tile untouched.
    #[test]
    fn amx_microkernels_match_the_product_of_their_bf16_inputs() {
        let t = Bf16Tier::Amx;
        let config = AmxTiles { release: false }.assemble().expect("config");
        let release = AmxTiles { release: true }.assemble().expect("release");
        let epilogues = [
            None,
            Some(WideEpilogue { bias: true, acts: vec![WideAct::Max((-0.5f32).to_bits()), WideAct::Relu] }),
            Some(WideEpilogue { bias: false, acts: vec![WideAct::Add, WideAct::Min(0.75f32.to_bits())] }),
        ];
        let mut stack = vec![0u8; 64 << 10];
        let mut checked = 0;
        for rows in [1, 5, 16, 17, 31, 32] {
            for cols in [16, 32] {
                for (e, epilogue) in epilogues.iter().enumerate() {
                    let code = AmxMicrokernel { rows, cols, epilogue: epilogue.clone() }.assemble().expect("assemble");
                    for kc in [1usize, 31, 32, 33, 70] {
                        let mut s = incept_ir::text::parse::SplitMix((rows * 131 + cols + kc * 7 + e) as u64);
                        let mut val = || round_bf16(s.uniform() as f32 * 2.0 - 1.0);
                        let a: Vec<Vec<f32>> = (0..MR_AMX).map(|_| (0..kc).map(|_| val()).collect()).collect();
                        let b: Vec<Vec<f32>> = (0..kc).map(|_| (0..32).map(|_| val()).collect()).collect();
                        let mut pa = vec![0u16; t.a_panel_len(kc)];
                        for (r, row) in a.iter().enumerate() {
                            for (k, &v) in row.iter().enumerate() {
                                pa[t.a_offset(r, k)] = to_bf16(v);
                            }
                        }
                        let pairs = kc.next_multiple_of(32) / 2;
                        let mut pb = vec![0u16; pairs * 64];
                        for (k, row) in b.iter().enumerate() {
                            for (c, &v) in row.iter().enumerate() {
                                pb[(k / 2) * 64 + c * 2 + k % 2] = to_bf16(v);
                            }
                        }
                        let bias: Vec<f32> = (0..MR_AMX).map(|r| r as f32 * 0.1 - 1.0).collect();
                        let ldc = 32 + 5;
                        let res: Vec<f32> = (0..(MR_AMX + 1) * ldc).map(|i| (i % 5) as f32 * 0.25 - 0.5).collect();
                        for flags in 0..4u64 {
                            let c0: Vec<f32> = (0..(MR_AMX + 1) * ldc).map(|i| (i % 7) as f32 - 3.0).collect();
                            let mut c = c0.clone();
                            let mut cpu = Cpu::new(&mut stack);
                            // SAFETY: the configuration writes below rsp inside the stack buffer.
                            unsafe { cpu.run(&config) };
                            cpu.set(Register::RDI, pa.as_ptr() as u64);
                            cpu.set(Register::RSI, pb.as_ptr() as u64);
                            cpu.set(Register::RDX, c.as_mut_ptr() as u64);
                            cpu.set(Register::RCX, (ldc * 4) as u64);
                            cpu.set(Register::R8, kc as u64);
                            cpu.set(Register::R9, flags);
                            cpu.stack_arg(0, bias.as_ptr() as u64);
                            cpu.stack_arg(1, res.as_ptr() as u64);
                            // SAFETY: the panels hold the padded K, C and the residual `MR_AMX + 1`
                            // rows of ldc floats, the bias MR_AMX floats.
                            unsafe { cpu.run(&code) };
                            // SAFETY: no memory operand.
                            unsafe { cpu.run(&release) };
                            assert!(cpu.config.is_none(), "tiles not released");
                            for r in 0..=MR_AMX {
                                for j in 0..ldc {
                                    let (got, old) = (c[r * ldc + j], c0[r * ldc + j]);
                                    if r >= rows || j >= cols {
                                        assert_eq!(got.to_bits(), old.to_bits(), "{rows}x{cols}: C[{r}][{j}] written");
                                        continue;
                                    }
                                    let dot: f64 = (0..kc).map(|k| a[r][k] as f64 * b[k][j] as f64).sum();
                                    let mag: f64 = (0..kc).map(|k| (a[r][k] as f64 * b[k][j] as f64).abs()).sum();
                                    let mut want = dot + if flags & 1 == 1 { old as f64 } else { 0.0 };
                                    if flags & 2 == 2 {
                                        match e {
                                            1 => want = (want + bias[r] as f64).max(-0.5).max(0.0),
                                            2 => want = (want + res[r * ldc + j] as f64).min(0.75),
                                            _ => {}
                                        }
                                    }
                                    let tol = 2e-7 * (kc as f64 + 4.0) * (mag + old.abs() as f64 + 4.0);
                                    assert!(
                                        (got as f64 - want).abs() <= tol,
                                        "{rows}x{cols} epilogue {e} kc {kc} flags {flags}: C[{r}][{j}] = {got}, want {want}"
                                    );
                                }
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 6 * 2 * 3 * 5 * 4);
    }

    /// The AMX peak probe runs its loop and leaves the tiles released (on zero tiles: the sums
    /// stay zero).
    #[test]
    fn the_amx_peak_probe_runs_and_releases() {
        let code = crate::codegen::bf16::AmxPeak.assemble().expect("assemble");
        let mut out = vec![1f32; 256];
        let mut stack = vec![0u8; 64 << 10];
        let mut cpu = Cpu::new(&mut stack);
        cpu.set(Register::RDI, out.as_mut_ptr() as u64);
        cpu.set(Register::RSI, 3);
        // SAFETY: the probe stores 256 floats at rdi and configures tiles below rsp.
        unsafe { cpu.run(&code) };
        assert!(cpu.config.is_none(), "tiles not released");
        assert!(out.iter().all(|&v| v == 0.0), "the accumulator tile was not stored");
        assert!(cpu.steps > 3 * 6, "the loop did not run three times");
    }

    /// The emulator catches what it must: a microkernel whose B tiles are read at the wrong
    /// stride gives other sums (so the test above could fail).
    #[test]
    fn the_emulator_sees_a_wrong_product() {
        let t = Bf16Tier::Amx;
        let config = AmxTiles { release: false }.assemble().expect("config");
        let code = AmxMicrokernel { rows: 16, cols: 16, epilogue: None }.assemble().expect("assemble");
        let kc = 32;
        let mut s = incept_ir::text::parse::SplitMix(9);
        let pa: Vec<u16> = (0..t.a_panel_len(kc)).map(|_| to_bf16(s.uniform() as f32 - 0.5)).collect();
        let pb: Vec<u16> = (0..16 * 64).map(|_| to_bf16(s.uniform() as f32 - 0.5)).collect();
        let mut c = vec![0f32; 16 * 16];
        let mut stack = vec![0u8; 64 << 10];
        let mut cpu = Cpu::new(&mut stack);
        // SAFETY: as in the test above.
        unsafe { cpu.run(&config) };
        cpu.set(Register::RDI, pa.as_ptr() as u64);
        cpu.set(Register::RSI, pb.as_ptr() as u64);
        cpu.set(Register::RDX, c.as_mut_ptr() as u64);
        cpu.set(Register::RCX, 64);
        cpu.set(Register::R8, kc as u64);
        cpu.set(Register::R9, 0);
        cpu.stack_arg(0, 0);
        cpu.stack_arg(1, 0);
        // SAFETY: as in the test above.
        unsafe { cpu.run(&code) };
        // B read as a pair buffer (128 bytes per pair row) against B read 64 bytes per row.
        let want = |i: usize, j: usize, row_bytes: usize| -> f32 {
            (0..kc)
                .map(|k| {
                    let av = crate::codegen::bf16::from_bf16(pa[t.a_offset(i, k)]);
                    let bv = crate::codegen::bf16::from_bf16(pb[(k / 2) * row_bytes / 2 + j * 2 + k % 2]);
                    av * bv
                })
                .sum()
        };
        assert!((c[17] - want(1, 1, 128)).abs() < 1e-3, "{} vs {}", c[17], want(1, 1, 128));
        assert!((0..256).any(|x| (c[x] - want(x / 16, x % 16, 64)).abs() > 1e-3), "a wrong stride gives the same sums");
    }
}
