//! The f32x4 FMA peak of one core, measured with a JIT kernel: the ceiling that GEMM and conv
//! kernels are compared with (`incept peak`).

use std::sync::Arc;
use std::time::Instant;

use super::Tier;

use cranelift_codegen::ir::InstBuilder;
use incept_runtime::{DType, IoSpec, Kernel, Model, Operand, Plan, RunOptions, Slot, Step};

use super::builder::{F32X4, Kb};
use super::{CodegenError, Isas, KernelSpec, compile_all};

/// Independent FMA chains: enough to cover the FMA latency (4-5 cycles) times the two FMA ports.
const CHAINS: usize = 12;

/// `iterations` rounds of `acc[i] = acc[i] * y + z` over [`CHAINS`] f32x4 accumulators, which
/// are stored at the end so the work is not dead. The accumulator is the multiplicand the
/// x86 FMA overwrites, so the loop needs no register moves.
#[derive(Debug)]
struct FmaLoop {
    iterations: i64,
}

impl KernelSpec for FmaLoop {
    fn name(&self) -> String {
        "fma peak".into()
    }

    fn emit(&self, kb: &mut Kb) {
        let out = kb.operand(0);
        let (y, z) = (kb.vconst(0.999), kb.vconst(0.001));
        let accs: Vec<_> = (0..CHAINS)
            .map(|i| {
                let v = kb.vconst(i as f32 * 0.01);
                kb.var(F32X4, v)
            })
            .collect();
        kb.for_const(0, self.iterations, 1, |kb, _| {
            for &a in &accs {
                let v = kb.b.use_var(a);
                let n = kb.fma(v, y, z);
                kb.b.def_var(a, n);
            }
        });
        let mut sum = kb.b.use_var(accs[0]);
        for &a in &accs[1..] {
            let v = kb.b.use_var(a);
            sum = kb.b.ins().fadd(sum, v);
        }
        kb.store_v(sum, out, 0);
    }
}

/// Measures the peak in GFLOP/s: the best of `runs` runs of a kernel doing `iterations` rounds.
pub fn fma_peak_gflops(iterations: i64, runs: usize) -> Result<f64, CodegenError> {
    let blob = compile_all(&Isas::host()?, &[Arc::new(FmaLoop { iterations })])?;
    let flops = (iterations as u64) * (CHAINS as u64) * 8;
    let mut plan = Plan {
        code: blob.code,
        kernels: vec![Kernel {
            offset: blob.offsets[0].0,
            len: blob.offsets[0].1,
            name: "fma peak".into(),
            tiles: 1,
            operands: vec![incept_runtime::Need { extent: 16, writes: true, constant: false, entry: false }],
            calls: vec![],
        }],
        steps: vec![Step {
            kernel: 0,
            operands: vec![Operand { slot: Slot::Output(0), offset: 0, extent: 16, writes: true }],
            tiles: 1,
            name: "peak".into(),
            op: "Fma".into(),
            flops,
            check: None,
        }],
        weights: incept_runtime::buffer::AlignedBuf::zeroed(0).into(),
        arena_size: 0,
        status: None,
        inputs: vec![],
        outputs: vec![IoSpec { name: "sum".into(), dtype: DType::F32, shape: vec![4] }],
        features: vec![],
        seal: [0; 32],
    };
    plan.seal();
    let model = Model::new(plan, &RunOptions { threads: 1 }).map_err(|e| CodegenError::Load(e.to_string()))?;
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = Instant::now();
        let out = model.run(&[]).map_err(|e| CodegenError::Load(e.to_string()))?;
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(out);
    }
    Ok(flops as f64 / best / 1e9)
}

/// The FMA peak of a wide tier in GFLOP/s (independent `vfmadd231ps` chains, best of `runs`),
/// or `None` when this CPU does not run the tier.
pub fn wide_peak_gflops(tier: Tier, iterations: usize, runs: usize) -> Result<Option<f64>, CodegenError> {
    wide_probe(super::wide::FmaLoop { tier, bf16: false }, iterations, runs)
}

/// The VDPBF16PS peak (AVX512-BF16) in GFLOP/s (two multiply-adds per f32 lane), or `None`
/// when this CPU lacks it.
pub fn bf16_peak_gflops(iterations: usize, runs: usize) -> Result<Option<f64>, CodegenError> {
    if !super::bf16::Bf16Tier::Avx512Bf16.runs_here() {
        return Ok(None);
    }
    wide_probe(super::wide::FmaLoop { tier: Tier::Avx512, bf16: true }, iterations, runs)
}

/// The AMX TDPBF16PS peak in GFLOP/s (four independent tile accumulators), or `None` when this
/// CPU or OS does not run AMX tiles.
pub fn amx_peak_gflops(iterations: usize, runs: usize) -> Result<Option<f64>, CodegenError> {
    use super::bf16::{AmxPeak, Bf16Tier};
    if !Bf16Tier::Amx.runs_here() || iterations == 0 {
        return Ok(None);
    }
    let flops = (iterations * AmxPeak::FLOPS_PER_ITERATION) as f64;
    // SAFETY: the code is `extern "sysv64" fn(*mut f32, usize)` storing at most 256 floats (see
    // AmxPeak), and this CPU and OS run AMX tiles (runs_here asked Linux for the tile state).
    unsafe { time_probe(&AmxPeak.assemble()?, 256, iterations, runs, flops) }.map(Some)
}

/// The best GFLOP/s of `runs` calls of a probe `extern "sysv64" fn(out: *mut f32, iterations)`
/// doing `flops` in all.
///
/// # Safety
/// `code` must be such a function, storing at most `out_len` floats, that this CPU runs.
unsafe fn time_probe(
    code: &[u8],
    out_len: usize,
    iterations: usize,
    runs: usize,
    flops: f64,
) -> Result<f64, CodegenError> {
    let exec = incept_runtime::code::ExecutableCode::new(code).map_err(|e| CodegenError::Load(e.to_string()))?;
    let addr = exec.address(0).ok_or_else(|| CodegenError::Load("empty code".into()))?;
    // SAFETY: the caller's contract.
    let f: unsafe extern "sysv64" fn(*mut f32, usize) = unsafe { std::mem::transmute(addr) };
    let mut out = vec![0f32; out_len];
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = Instant::now();
        // SAFETY: `out` holds the floats the probe may store.
        unsafe { f(out.as_mut_ptr(), iterations) };
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&out);
    }
    Ok(flops / best / 1e9)
}

fn wide_probe(probe: super::wide::FmaLoop, iterations: usize, runs: usize) -> Result<Option<f64>, CodegenError> {
    let tier = probe.tier;
    if !runs_tier(tier) || iterations == 0 {
        return Ok(None);
    }
    let flops = (iterations * probe.chains() * probe.flops_per_instruction()) as f64;
    // SAFETY: the code is `extern "sysv64" fn(*mut f32, usize)` storing at most 16 floats (see
    // FmaLoop), and this CPU runs the tier.
    unsafe { time_probe(&probe.assemble()?, 16, iterations, runs, flops) }.map(Some)
}

fn runs_tier(tier: Tier) -> bool {
    match tier {
        Tier::F32x4 => true,
        Tier::Avx2 => super::wide::host_has_avx2(),
        Tier::Avx512 => super::wide::host_has_avx512(),
    }
}

/// GFLOP/s of a wide tier's whole-panel microkernel on panels that stay in L1 (K = `kc` per
/// call), best of `runs` runs of `calls` calls: what the GEMM's inner loop can reach at most.
pub fn wide_microkernel_gflops(tier: Tier, kc: usize, calls: usize, runs: usize) -> Result<Option<f64>, CodegenError> {
    microkernel_probe(tier, false, kc, calls, runs)
}

/// The same for the AVX512-BF16 microkernel (12 x 32, bf16 pairs), or `None` without it.
pub fn bf16_microkernel_gflops(kc: usize, calls: usize, runs: usize) -> Result<Option<f64>, CodegenError> {
    if !super::bf16::Bf16Tier::Avx512Bf16.runs_here() {
        return Ok(None);
    }
    microkernel_probe(Tier::Avx512, true, kc, calls, runs)
}

fn microkernel_probe(
    tier: Tier,
    bf16: bool,
    kc: usize,
    calls: usize,
    runs: usize,
) -> Result<Option<f64>, CodegenError> {
    use super::wide::WideMicrokernel;
    if !tier.is_wide() || !runs_tier(tier) || kc == 0 {
        return Ok(None);
    }
    let (mr, nr) = (tier.panel_rows(1), tier.nr());
    let code =
        WideMicrokernel { tier, rows: mr, cols: nr, epilogue: None, b_row_bytes: None, bf16, taps: None }.assemble()?;
    let exec = incept_runtime::code::ExecutableCode::new(&code).map_err(|e| CodegenError::Load(e.to_string()))?;
    let addr = exec.address(0).ok_or_else(|| CodegenError::Load("empty code".into()))?;
    type Ukernel =
        unsafe extern "sysv64" fn(*const f32, *const f32, *mut f32, usize, usize, usize, *const f32, *const f32);
    // SAFETY: the code has the microkernel's documented signature and this CPU runs the tier.
    let f: Ukernel = unsafe { std::mem::transmute(addr) };
    let a = vec![0.5f32; kc * mr];
    let b = vec![0.25f32; kc * nr];
    let mut c = vec![0f32; mr * nr];
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..calls {
            // SAFETY: the panels hold kc steps and C one mr x nr tile.
            unsafe { f(a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), nr * 4, kc, 1, std::ptr::null(), std::ptr::null()) };
        }
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&c);
    }
    Ok(Some((calls * kc * mr * nr * 2) as f64 / best / 1e9))
}

/// Operations per second (2 per multiply-add, in G) of the AVX512-VNNI int8 tile (12 x 32,
/// u8 by s8 quads, requantising epilogue) on panels that stay in L1 (K = `kc` per call), best
/// of `runs` runs of `calls` calls; `None` without AVX512-VNNI.
pub fn vnni_microkernel_gops(kc: usize, calls: usize, runs: usize) -> Result<Option<f64>, CodegenError> {
    use super::int8::{Int8Out, MR_INT8, QUAD_ROW_BYTES, VnniMicrokernel, host_has_vnni};
    if !host_has_vnni() || kc == 0 {
        return Ok(None);
    }
    let quads = kc.div_ceil(4);
    let code = VnniMicrokernel {
        rows: MR_INT8,
        cols: 32,
        valid: 32,
        out: Int8Out::Requant { signed: false },
        isa: crate::codegen::int8::Int8Isa::Avx512Vnni,
        walk: None,
    }
    .assemble()?;
    let exec = incept_runtime::code::ExecutableCode::new(&code).map_err(|e| CodegenError::Load(e.to_string()))?;
    let addr = exec.address(0).ok_or_else(|| CodegenError::Load("empty code".into()))?;
    type Tile =
        unsafe extern "sysv64" fn(*const i8, *const u8, *mut u8, usize, usize, *const i32, *const f32, *const f32);
    // SAFETY: the code has the tile's documented signature and this CPU runs AVX512-VNNI.
    let f: Tile = unsafe { std::mem::transmute(addr) };
    let a = vec![3i8; quads * MR_INT8 * 4];
    let b = vec![5u8; quads * QUAD_ROW_BYTES];
    let bias = [0i32; MR_INT8];
    let mult = [1e-4f32; MR_INT8];
    let consts = [0f32, 255.0, 0.0];
    let mut c = vec![0u8; MR_INT8 * 32];
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..calls {
            // SAFETY: the panels hold `quads` quad steps and C one 12 x 32 tile of bytes.
            unsafe {
                f(a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), 32, quads, bias.as_ptr(), mult.as_ptr(), consts.as_ptr())
            };
        }
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&c);
    }
    Ok(Some((calls * quads * 4 * MR_INT8 * 32 * 2) as f64 / best / 1e9))
}

/// VPDPBUSD's own peak in GOP/s (2 per multiply-add): 24 independent zmm accumulators, each
/// taking one instruction per iteration of `iterations`; `None` without AVX512-VNNI.
pub fn vnni_peak_gops(iterations: usize, runs: usize) -> Result<Option<f64>, CodegenError> {
    use iced_x86::code_asm::*;
    if !super::int8::host_has_vnni() || iterations == 0 {
        return Ok(None);
    }
    let asm = |e: IcedError| CodegenError::Load(e.to_string());
    let mut x = CodeAssembler::new(64).map_err(asm)?;
    let zmm = super::wide::ZMM;
    for r in zmm.iter().take(26) {
        x.vpxord(*r, *r, *r).map_err(asm)?;
    }
    let mut top = x.create_label();
    x.set_label(&mut top).map_err(asm)?;
    for acc in zmm.iter().take(24) {
        x.vpdpbusd(*acc, zmm[24], zmm[25]).map_err(asm)?;
    }
    x.dec(rsi).map_err(asm)?;
    x.jnz(top).map_err(asm)?;
    x.vmovups(zmmword_ptr(rdi), zmm[0]).map_err(asm)?;
    x.vzeroupper().map_err(asm)?;
    x.ret().map_err(asm)?;
    let code = x.assemble(0).map_err(asm)?;
    let ops = (iterations * 24 * 64 * 2) as f64;
    // SAFETY: the code is `extern "sysv64" fn(*mut f32, usize)` storing 16 floats, and this CPU
    // runs AVX512-VNNI.
    unsafe { time_probe(&code, 16, iterations, runs, ops) }.map(Some)
}
