//! Kernel plan -> machine code: each distinct kernel spec becomes one Cranelift function,
//! compiled in parallel and laid out in one position-independent code blob.

#[cfg(test)]
mod amx_emulator;
pub mod bf16;
pub mod bf16_phase;
pub mod builder;
pub mod int8;
pub mod int8_arith;
pub mod int8_avx2;
pub mod int8_columns;
pub mod int8_depthwise;
pub mod int8_elementwise;
pub mod int8_elementwise_avx2;
pub mod int8_layout;
pub mod int8_plane_avx2;
pub mod int8_planes;
pub mod kernels;
pub mod peak;
pub mod wide;
pub mod wide_depthwise;
pub mod wide_depthwise_plane;
pub mod wide_expr;
pub mod wide_winograd;

use std::fmt::Debug;
use std::sync::Arc;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::isa::TargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use rayon::prelude::*;

use builder::Kb;

/// Errors of code generation.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("cannot target this CPU: {0}")]
    Isa(String),
    #[error("kernel {kernel}: Cranelift: {msg}")]
    Compile { kernel: String, msg: String },
    #[error("cannot load a measurement kernel: {0}")]
    Load(String),
}

/// The instruction set the GEMM kernels are built for (everything else is Cranelift f32x4).
/// Ordered: each tier's plans need the features of the tiers before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// Cranelift f32x4 (SSE4.2, no FMA): runs on every x86-64-v2 CPU.
    F32x4,
    /// An AVX2 + FMA register tile written with an assembler (see [`wide`]).
    Avx2,
    /// An AVX-512F register tile written with an assembler (see [`wide`]).
    Avx512,
}

/// A CPU feature plans may need: its name (as the runtime checks it), the Cranelift ISA flag
/// that lets generated code use it (None: only the assembler kernels do), and the lowest tier
/// whose plans need it.
struct Feature {
    name: &'static str,
    cranelift: Option<&'static str>,
    tier: Tier,
}

const FEATURES: [Feature; 12] = [
    Feature { name: "sse3", cranelift: Some("has_sse3"), tier: Tier::F32x4 },
    Feature { name: "ssse3", cranelift: Some("has_ssse3"), tier: Tier::F32x4 },
    Feature { name: "sse4.1", cranelift: Some("has_sse41"), tier: Tier::F32x4 },
    Feature { name: "sse4.2", cranelift: Some("has_sse42"), tier: Tier::F32x4 },
    Feature { name: "popcnt", cranelift: Some("has_popcnt"), tier: Tier::F32x4 },
    Feature { name: "avx", cranelift: Some("has_avx"), tier: Tier::Avx2 },
    Feature { name: "avx2", cranelift: Some("has_avx2"), tier: Tier::Avx2 },
    Feature { name: "fma", cranelift: Some("has_fma"), tier: Tier::Avx2 },
    Feature { name: "bmi1", cranelift: Some("has_bmi1"), tier: Tier::Avx2 },
    Feature { name: "bmi2", cranelift: Some("has_bmi2"), tier: Tier::Avx2 },
    Feature { name: "lzcnt", cranelift: Some("has_lzcnt"), tier: Tier::Avx2 },
    Feature { name: "avx512f", cranelift: None, tier: Tier::Avx512 },
];

impl Tier {
    /// Rows of a packed A panel for `m` rows of output.
    pub fn panel_rows(self, m: usize) -> usize {
        match self {
            // The f32x4 microkernel takes the panel height as its row count.
            Tier::F32x4 => 12.min(m).max(1),
            // A wide microkernel always steps a whole panel; short tiles use fewer rows of it.
            Tier::Avx2 => wide::MR_WIDE,
            Tier::Avx512 => wide::MR_512,
        }
    }
    /// Columns of a packed B panel.
    pub fn nr(self) -> usize {
        match self {
            Tier::F32x4 => kernels::gemm::NR,
            Tier::Avx2 => wide::NR_WIDE,
            Tier::Avx512 => wide::NR_512,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Tier::F32x4 => "f32x4",
            Tier::Avx2 => "avx2",
            Tier::Avx512 => "avx512",
        }
    }
    /// CPU features a plan built for this tier needs beyond x86-64's baseline: the ones its
    /// Cranelift code may use (see `cranelift_flags`) and the assembler kernels'. The f32x4
    /// tier is x86-64-v2 (every x86-64 CPU since about 2009), the wide ones add x86-64-v3.
    pub fn features(self) -> Vec<&'static str> {
        FEATURES.iter().filter(|f| f.tier <= self).map(|f| f.name).collect()
    }

    /// The Cranelift x86-64 ISA flags of this tier's code: fixed per tier, not the compiling
    /// host's, so that a plan runs on every CPU with `features` (a host's AVX-512 VL or BMI
    /// extensions would otherwise leak into an f32x4 plan).
    pub fn cranelift_flags(self) -> Vec<&'static str> {
        FEATURES.iter().filter(|f| f.tier <= self).filter_map(|f| f.cranelift).collect()
    }

    /// Whether the GEMM calls a machine-code microkernel (and reads only packed panels).
    pub fn is_wide(self) -> bool {
        self != Tier::F32x4
    }
    /// The widest tier this CPU runs.
    pub fn host() -> Tier {
        if wide::host_has_avx512() {
            Tier::Avx512
        } else if wide::host_has_avx2() {
            Tier::Avx2
        } else {
            Tier::F32x4
        }
    }
}

/// A kernel specialised for one node (or several identical ones): everything it needs is baked
/// in, and its `Debug` form identifies it (equal specs compile once).
pub trait KernelSpec: Debug + Send + Sync {
    /// A short readable name for profiles (`conv3x3 64->64 56x56`).
    fn name(&self) -> String;
    /// Emits the kernel body.
    fn emit(&self, kb: &mut Kb);
    /// Whether Cranelift may reschedule the kernel (`opt_level=speed`). Register-tiled
    /// microkernels are emitted in the order they should run: Cranelift's scheduling interleaves
    /// unrolled steps and spills (KERNEL-NOTES.md), so they opt out.
    fn optimize(&self) -> bool {
        true
    }
    /// Machine code written directly (the wide tier's assembler kernels) instead of CLIF; such a
    /// spec's `emit` is never called.
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        None
    }
    /// The bf16 instruction set the kernel multiplies with, if it multiplies in bf16.
    fn bf16(&self) -> Option<bf16::Bf16Tier> {
        None
    }
    /// CPU features the kernel needs beyond its tier's (a plan that holds it records them).
    fn features(&self) -> &'static [&'static str] {
        &[]
    }
}

/// The host ISAs: `opt_level=speed` and `none` (for kernels that keep their emitted schedule).
/// FMA and SSE4.1/AVX follow the host CPU.
pub struct Isas {
    pub speed: Arc<dyn TargetIsa>,
    pub none: Arc<dyn TargetIsa>,
}

impl Isas {
    pub fn host() -> Result<Isas, CodegenError> {
        Ok(Isas { speed: host_isa_with("speed")?, none: host_isa_with("none")? })
    }

    /// The ISAs of a tier's plans (see [`Tier::cranelift_flags`]); on other architectures than
    /// x86-64, the host's.
    pub fn for_tier(tier: Tier) -> Result<Isas, CodegenError> {
        Ok(Isas { speed: tier_isa_with(tier, "speed")?, none: tier_isa_with(tier, "none")? })
    }

    fn for_spec(&self, spec: &dyn KernelSpec) -> &dyn TargetIsa {
        if spec.optimize() { self.speed.as_ref() } else { self.none.as_ref() }
    }
}

/// The host ISA with `opt_level=speed`.
pub fn host_isa() -> Result<Arc<dyn TargetIsa>, CodegenError> {
    host_isa_with("speed")
}

fn host_isa_with(opt_level: &str) -> Result<Arc<dyn TargetIsa>, CodegenError> {
    let mut flags = settings::builder();
    flags.set("opt_level", opt_level).map_err(|e| CodegenError::Isa(e.to_string()))?;
    flags
        .set("enable_verifier", if cfg!(debug_assertions) { "true" } else { "false" })
        .map_err(|e| CodegenError::Isa(e.to_string()))?;
    let isa = cranelift_native::builder().map_err(|e| CodegenError::Isa(e.to_string()))?;
    isa.finish(settings::Flags::new(flags)).map_err(|e| CodegenError::Isa(e.to_string()))
}

fn tier_isa_with(tier: Tier, opt_level: &str) -> Result<Arc<dyn TargetIsa>, CodegenError> {
    if !cfg!(target_arch = "x86_64") {
        return host_isa_with(opt_level);
    }
    let err = |e: &dyn std::fmt::Display| CodegenError::Isa(e.to_string());
    let mut flags = settings::builder();
    flags.set("opt_level", opt_level).map_err(|e| err(&e))?;
    flags.set("enable_verifier", if cfg!(debug_assertions) { "true" } else { "false" }).map_err(|e| err(&e))?;
    let mut isa = cranelift_native::builder_with_options(false).map_err(|e| err(&e))?;
    for f in tier.cranelift_flags() {
        isa.enable(f).map_err(|e| err(&e))?;
    }
    isa.finish(settings::Flags::new(flags)).map_err(|e| err(&e))
}

/// Compiles one kernel to machine code. The code must need no relocation.
pub fn compile_kernel(isa: &dyn TargetIsa, id: u32, spec: &dyn KernelSpec) -> Result<Vec<u8>, CodegenError> {
    if let Some(code) = spec.machine_code() {
        return code;
    }
    let func = builder::build_kernel(isa, id, |kb| spec.emit(kb));
    let mut ctx = cranelift_codegen::Context::for_function(func);
    // INCEPT_DUMP_KERNELS=substring prints the machine code listing of matching kernels.
    let dump = std::env::var("INCEPT_DUMP_KERNELS").ok().filter(|f| spec.name().contains(f.as_str()));
    ctx.set_disasm(dump.is_some());
    let code = ctx
        .compile(isa, &mut ControlPlane::default())
        .map_err(|e| CodegenError::Compile { kernel: spec.name(), msg: format!("{:?}", e.inner) })?;
    if dump.is_some() {
        eprintln!("=== {}\n{}", spec.name(), code.vcode.as_deref().unwrap_or("(no listing)"));
    }
    if !code.buffer.relocs().is_empty() {
        return Err(CodegenError::Compile { kernel: spec.name(), msg: "the code needs relocations".into() });
    }
    Ok(code.code_buffer().to_vec())
}

/// Compiled kernels laid out in one blob: (code, per-kernel offset and length).
pub struct CodeBlob {
    pub code: Vec<u8>,
    pub offsets: Vec<(usize, usize)>,
}

/// Compiles every spec (in parallel) and concatenates the code, each kernel 64-byte aligned.
pub fn compile_all(isas: &Isas, specs: &[Arc<dyn KernelSpec>]) -> Result<CodeBlob, CodegenError> {
    let compiled: Vec<Vec<u8>> = specs
        .par_iter()
        .enumerate()
        .map(|(i, s)| compile_kernel(isas.for_spec(s.as_ref()), i as u32, s.as_ref()))
        .collect::<Result<_, _>>()?;
    let mut code = vec![];
    let mut offsets = vec![];
    for c in compiled {
        // Pad with int3 so a stray jump traps.
        code.resize(code.len().next_multiple_of(64), 0xcc);
        offsets.push((code.len(), c.len()));
        code.extend_from_slice(&c);
    }
    Ok(CodeBlob { code, offsets })
}

#[cfg(test)]
mod tests {
    use super::*;
    use builder::{Kb, ro};
    use incept_runtime::{DType, IoSpec, Kernel, Model, Operand, Plan, RunOptions, Slot, Step, Tensor};

    /// out[i] = in[i] * 2 + 1 over tiles of 4 elements.
    #[derive(Debug)]
    struct Affine;

    impl KernelSpec for Affine {
        fn name(&self) -> String {
            "affine".into()
        }
        fn emit(&self, kb: &mut Kb) {
            let [x, y] = [kb.operand(0), kb.operand(1)];
            let (two, one) = (kb.vconst(2.0), kb.vconst(1.0));
            let (begin, end) = (kb.begin, kb.end);
            kb.for_range(begin, end, 1, |kb, t| {
                let off = kb.muli(t, 16);
                let px = kb.add(x, off);
                let py = kb.add(y, off);
                let v = kb.load_v(px, 0, ro());
                let r = kb.fma(v, two, one);
                kb.store_v(r, py, 0);
            });
        }
    }

    #[test]
    fn a_compiled_kernel_runs_in_the_runtime() {
        let blob = compile_all(&Isas::host().expect("isa"), &[Arc::new(Affine)]).expect("compile");
        let mut plan = Plan {
            code: blob.code,
            kernels: vec![Kernel {
                offset: blob.offsets[0].0,
                len: blob.offsets[0].1,
                name: "affine".into(),
                tiles: 3,
                operands: vec![
                    incept_runtime::Need { extent: 48, writes: false, constant: false, entry: false },
                    incept_runtime::Need { extent: 48, writes: true, constant: false, entry: false },
                ],
                calls: vec![],
            }],
            steps: vec![Step {
                kernel: 0,
                operands: vec![
                    Operand { slot: Slot::Input(0), offset: 0, extent: 48, writes: false },
                    Operand { slot: Slot::Output(0), offset: 0, extent: 48, writes: true },
                ],
                tiles: 3,
                name: "n".into(),
                op: "Affine".into(),
                flops: 24,
                check: None,
            }],
            weights: incept_runtime::buffer::AlignedBuf::zeroed(0).into(),
            arena_size: 0,
            status: None,
            inputs: vec![IoSpec { name: "x".into(), dtype: DType::F32, shape: vec![12] }],
            outputs: vec![IoSpec { name: "y".into(), dtype: DType::F32, shape: vec![12] }],
            features: vec![],
            seal: [0; 32],
        };
        plan.seal();
        for threads in [1, 2] {
            let model = Model::new(plan.clone(), &RunOptions { threads }).expect("load");
            let x: Vec<f32> = (0..12).map(|i| i as f32).collect();
            let out = model.run(&[Tensor::from_f32(&[12], &x).expect("tensor")]).expect("run");
            let y = out[0].to_f32_vec().expect("f32");
            assert_eq!(y, x.iter().map(|v| v * 2.0 + 1.0).collect::<Vec<_>>());
        }
    }
}

#[cfg(test)]
mod gemm_tests {
    use super::*;
    use incept_ir::ops::{Activation, Unary};
    use kernels::gemm::{GemmSpec, GemmStep, Mat, NR};

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut r = incept_ir::text::parse::SplitMix(seed);
        (0..n).map(|_| r.uniform() as f32).collect()
    }

    /// Packs row-major A [m, k] into MR-row panels [panel][k][mr] (zero rows at the end).
    fn pack_a(a: &[f32], m: usize, k: usize, mr: usize) -> Vec<f32> {
        let pm = m.div_ceil(mr);
        let mut out = vec![0.0; pm * k * mr];
        for i in 0..m {
            for kk in 0..k {
                out[(i / mr) * k * mr + kk * mr + i % mr] = a[i * k + kk];
            }
        }
        out
    }

    fn pack_b(b: &[f32], k: usize, n: usize) -> Vec<f32> {
        let pn = n.div_ceil(NR);
        let mut out = vec![0.0; pn * k * NR];
        for kk in 0..k {
            for j in 0..n {
                out[(j / NR) * k * NR + kk * NR + j % NR] = b[kk * n + j];
            }
        }
        out
    }

    #[test]
    fn gemm_matches_naive_for_odd_shapes_layouts_and_threads() {
        for (m, n, k, mr, kc) in
            [(1, 1, 1, 12, 4), (13, 7, 9, 12, 4), (25, 17, 33, 12, 16), (5, 8, 3, 4, 2), (30, 9, 70, 12, 32)]
        {
            let (a, b) = (rand(m * k, 1), rand(k * n, 2));
            let bias = rand(m, 3);
            let res = rand(m * n, 4);
            let mut want = vec![0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    let s: f64 = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
                    want[i * n + j] = (s as f32 * 0.5 + bias[i] + res[i * n + j]).clamp(0.0, 6.0);
                }
            }
            for packed in [false, true] {
                let (a_in, a_mat) = if packed {
                    (
                        pack_a(&a, m, k, mr),
                        Mat { rs: 1, cs: mr as isize, panel_stride: (k * mr) as isize, batch_stride: 0, batch_mod: 0 },
                    )
                } else {
                    (
                        a.clone(),
                        Mat { rs: k as isize, cs: 1, panel_stride: (mr * k) as isize, batch_stride: 0, batch_mod: 0 },
                    )
                };
                let (b_in, b_mat) = if packed {
                    (
                        pack_b(&b, k, n),
                        Mat { rs: NR as isize, cs: 1, panel_stride: (k * NR) as isize, batch_stride: 0, batch_mod: 0 },
                    )
                } else if n % NR == 0 {
                    (b.clone(), Mat { rs: n as isize, cs: 1, panel_stride: NR as isize, batch_stride: 0, batch_mod: 0 })
                } else {
                    continue; // row-major B needs whole panels
                };
                let spec = GemmSpec {
                    m,
                    n,
                    k,
                    batch: 1,
                    a: a_mat,
                    b: b_mat,
                    c: Mat::row_major(n, 0),
                    alpha: 0.5,
                    bias: Some(Mat { rs: 1, cs: 0, panel_stride: 0, batch_stride: 0, batch_mod: 0 }),
                    steps: vec![
                        GemmStep::Add(Mat::row_major(n, 0)),
                        GemmStep::Act(Activation::Unary(Unary::Relu)),
                        GemmStep::Act(Activation::Clip { min: None, max: Some(6.0) }),
                    ],
                    mr,
                    kc,
                    m_panels: 2,
                    n_panels: 2,
                    tier: Tier::F32x4,
                    bf16: None,
                    b_pairs: false,
                    b_taps: None,
                };
                // Run with C as the output: operands A, B, C(out), bias, residual.
                let got = run_gemm(&spec, &a_in, &b_in, &bias, &res);
                let err = got.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(err < 1e-4, "{m}x{n}x{k} packed={packed}: {err}");
            }
        }
    }

    /// Each wide GEMM (loop nest + microkernels) against a plain product, with and without an
    /// epilogue, for row tails (m % MR), column tails of NR / 2 or fewer and of more (n % NR),
    /// and K within one block, at a block edge and over several (the block is 256); in f32 on
    /// every wide tier this CPU runs and in bf16 on every bf16 tier it runs (against the product
    /// of the bf16-rounded operands, within the f32 rounding of the sums).
    #[test]
    fn wide_gemm_matches_naive_for_every_tail() {
        use bf16::{Bf16Tier, round_bf16, to_bf16};
        use wide::host_wide_tiers;
        let tiers = host_wide_tiers();
        if tiers.len() < 2 {
            println!("skipped for the wide tiers this CPU lacks (has: {tiers:?})");
        }
        let mut kinds: Vec<(Tier, Option<Bf16Tier>)> = tiers.iter().map(|&t| (t, None)).collect();
        for t in Bf16Tier::ALL {
            if t.runs_here() {
                kinds.push((Tier::Avx512, Some(t)));
            } else {
                println!("skipped bf16 on {} (this CPU lacks it)", t.name());
            }
        }
        let mut checked = 0;
        for &(tier, bf) in &kinds {
            let nr_w = tier.nr();
            let mr_w = bf.map_or(tier.panel_rows(1), |t| t.mr());
            for m in [1, mr_w, mr_w + 1, 2 * mr_w + 1] {
                for n in [1, nr_w / 2, nr_w / 2 + 1, nr_w, nr_w + 1, 3 * nr_w + 1] {
                    for k in [1, 256, 257, 600] {
                        // 0: none; 1: alpha, bias, a residual, ReLU, Clip (finished in Cranelift);
                        // 2: bias, Clip, ReLU; 3: bias, a residual, ReLU (both finished inside
                        // the microkernel).
                        let variant = (m + n + k + tier as usize) % 4;
                        let epilogue = variant > 0;
                        let (mut a, mut b) = (rand(m * k, 1), rand(k * n, 2));
                        if bf.is_some() {
                            // What the bf16 GEMM multiplies; the packer rounds B again (a no-op).
                            a.iter_mut().chain(b.iter_mut()).for_each(|v| *v = round_bf16(*v));
                        }
                        let (bias, res) = (rand(m, 3), rand(m * n, 4));
                        let mut want = vec![0f32; m * n];
                        for i in 0..m {
                            for j in 0..n {
                                let s = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum::<f64>() as f32;
                                want[i * n + j] = match variant {
                                    0 => s,
                                    1 => (s * 0.5 + bias[i] + res[i * n + j]).clamp(0.0, 6.0),
                                    2 => (s + bias[i]).clamp(-1.0, 0.75).max(0.0),
                                    _ => (s + bias[i] + res[i * n + j]).max(0.0),
                                };
                            }
                        }
                        let pm = m.div_ceil(mr_w);
                        let (pa, a_mat) = match bf {
                            None => {
                                let mut pa = vec![0f32; pm * k * mr_w];
                                for i in 0..m {
                                    for p in 0..k {
                                        pa[((i / mr_w) * k + p) * mr_w + i % mr_w] = a[i * k + p];
                                    }
                                }
                                let mat = Mat {
                                    rs: 1,
                                    cs: mr_w as isize,
                                    panel_stride: (k * mr_w) as isize,
                                    batch_stride: 0,
                                    batch_mod: 0,
                                };
                                (pa, mat)
                            }
                            Some(t) => {
                                let len = t.a_panel_len(k);
                                let mut h = vec![0u16; pm * len];
                                for i in 0..m {
                                    for p in 0..k {
                                        h[(i / mr_w) * len + t.a_offset(i % mr_w, p)] = to_bf16(a[i * k + p]);
                                    }
                                }
                                let pa =
                                    h.chunks(2).map(|c| f32::from_bits(c[0] as u32 | (c[1] as u32) << 16)).collect();
                                let mat = Mat {
                                    rs: 1,
                                    cs: t.a_cs(),
                                    panel_stride: (len / 2) as isize,
                                    batch_stride: 0,
                                    batch_mod: 0,
                                };
                                (pa, mat)
                            }
                        };
                        let pn = n.div_ceil(nr_w);
                        let mut pb = vec![0f32; pn * k * nr_w];
                        for p in 0..k {
                            for j in 0..n {
                                pb[((j / nr_w) * k + p) * nr_w + j % nr_w] = b[p * n + j];
                            }
                        }
                        let spec = GemmSpec {
                            m,
                            n,
                            k,
                            batch: 1,
                            a: a_mat,
                            b: Mat {
                                rs: nr_w as isize,
                                cs: 1,
                                panel_stride: (k * nr_w) as isize,
                                batch_stride: 0,
                                batch_mod: 0,
                            },
                            c: Mat::row_major(n, 0),
                            alpha: if variant == 1 { 0.5 } else { 1.0 },
                            bias: epilogue.then_some(Mat {
                                rs: 1,
                                cs: 0,
                                panel_stride: 0,
                                batch_stride: 0,
                                batch_mod: 0,
                            }),
                            steps: match variant {
                                0 => vec![],
                                1 => vec![
                                    GemmStep::Add(Mat::row_major(n, 0)),
                                    GemmStep::Act(Activation::Unary(Unary::Relu)),
                                    GemmStep::Act(Activation::Clip { min: None, max: Some(6.0) }),
                                ],
                                2 => vec![
                                    GemmStep::Act(Activation::Clip { min: Some(-1.0), max: Some(0.75) }),
                                    GemmStep::Act(Activation::Unary(Unary::Relu)),
                                ],
                                _ => vec![
                                    GemmStep::Add(Mat::row_major(n, 0)),
                                    GemmStep::Act(Activation::Unary(Unary::Relu)),
                                ],
                            },
                            mr: mr_w,
                            kc: 256,
                            m_panels: 2,
                            n_panels: 2,
                            tier,
                            bf16: bf,
                            b_pairs: false,
                            b_taps: None,
                        };
                        assert_eq!(spec.wide_epilogue().is_some(), variant >= 2, "{spec:?}");
                        let mut specs: Vec<Arc<dyn KernelSpec>> = vec![Arc::new(spec.clone())];
                        specs.extend(spec.called_kernels());
                        let extras = [0, 2, 1, 2][variant];
                        let got = run_specs(&specs, &spec, &pa, &pb, &bias, &res, extras);
                        // f32: 1e-4 of the values, growing with sqrt(k); bf16 sums of exact
                        // products: the same bound (the values are in [0, 1)).
                        for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                (g - w).abs() <= 1e-4 * (1.0 + w.abs()) * (k as f32).sqrt(),
                                "{tier:?} {bf:?} m {m} n {n} k {k} epilogue {variant}: C[{}][{}] = {g}, want {w}",
                                idx / n,
                                idx % n
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 96 * kinds.len());
    }

    /// Runs a GEMM spec (the first of `specs`; the rest are the microkernels it calls) on A, B
    /// and the first `extras` of a bias and a residual.
    fn run_specs(
        specs: &[Arc<dyn KernelSpec>],
        spec: &GemmSpec,
        a: &[f32],
        b: &[f32],
        bias: &[f32],
        res: &[f32],
        extras: usize,
    ) -> Vec<f32> {
        use incept_runtime::Slot;
        let mut operands = vec![Slot::Input(0), Slot::Input(1), Slot::Output(0)];
        operands.extend([Slot::Input(2), Slot::Input(3)].into_iter().take(extras));
        operands.extend((1..specs.len()).map(Slot::Kernel));
        run_step(specs, operands, spec.tiles(), &[a, b, bias, res], spec.m * spec.n)
    }

    fn run_gemm(spec: &GemmSpec, a: &[f32], b: &[f32], bias: &[f32], res: &[f32]) -> Vec<f32> {
        use incept_runtime::Slot;
        let operands = vec![Slot::Input(0), Slot::Input(1), Slot::Output(0), Slot::Input(2), Slot::Input(3)];
        run_step(&[Arc::new(spec.clone())], operands, spec.tiles(), &[a, b, bias, res], spec.m * spec.n)
    }
}

/// Runs one step of `specs[0]` (the others are kernels it calls, as operands) over f32 inputs
/// at two threads and returns its one output of `out_len` floats.
#[cfg(test)]
fn run_step(
    specs: &[Arc<dyn KernelSpec>],
    operands: Vec<incept_runtime::Slot>,
    tiles: usize,
    inputs: &[&[f32]],
    out_len: usize,
) -> Vec<f32> {
    use incept_runtime::{DType, IoSpec, Kernel, Model, Operand, Plan, RunOptions, Step, Tensor};
    let blob = compile_all(&Isas::host().expect("isa"), specs).expect("compile");
    let operand = |slot| match slot {
        incept_runtime::Slot::Input(k) => Operand { slot, offset: 0, extent: inputs[k].len() * 4, writes: false },
        incept_runtime::Slot::Output(_) => Operand { slot, offset: 0, extent: out_len * 4, writes: true },
        _ => Operand::entry(slot),
    };
    let ops: Vec<Operand> = operands.iter().map(|&s| operand(s)).collect();
    let needs: Vec<incept_runtime::Need> = ops
        .iter()
        .map(|o| incept_runtime::Need {
            extent: o.extent,
            writes: o.writes,
            constant: false,
            entry: matches!(o.slot, incept_runtime::Slot::Helpers | incept_runtime::Slot::Kernel(_)),
        })
        .collect();
    let calls: Vec<usize> = operands
        .iter()
        .filter_map(|s| match s {
            incept_runtime::Slot::Kernel(k) => Some(*k),
            _ => None,
        })
        .collect();
    // Kernel 0 is the step's; the others are microkernels it calls.
    let kernels = blob
        .offsets
        .iter()
        .enumerate()
        .map(|(i, &(offset, len))| match i {
            0 => Kernel { offset, len, name: "k".into(), tiles, operands: needs.clone(), calls: calls.clone() },
            _ => Kernel { offset, len, name: "k".into(), tiles: 0, operands: vec![], calls: vec![] },
        })
        .collect();

    let mut plan = Plan {
        code: blob.code,
        kernels,
        steps: vec![Step {
            kernel: 0,
            operands: ops,
            tiles,
            name: "s".into(),
            op: "Test".into(),
            flops: 0,
            check: None,
        }],
        weights: incept_runtime::buffer::AlignedBuf::zeroed(0).into(),
        arena_size: 0,
        status: None,
        inputs: inputs
            .iter()
            .enumerate()
            .map(|(k, v)| IoSpec { name: format!("i{k}"), dtype: DType::F32, shape: vec![v.len()] })
            .collect(),
        outputs: vec![IoSpec { name: "out".into(), dtype: DType::F32, shape: vec![out_len] }],
        // Only kernels of the tiers this CPU runs are compiled here.
        features: vec![],
        seal: [0; 32],
    };
    plan.seal();
    let model = Model::new(plan, &RunOptions { threads: 2 }).expect("load");
    let ins: Vec<Tensor> = inputs.iter().map(|v| Tensor::from_f32(&[v.len()], v).expect("tensor")).collect();
    model.run(&ins).expect("run")[0].to_f32_vec().expect("f32")
}

#[cfg(test)]
mod im2col_tests {
    use super::*;
    use kernels::conv::{Geom, Im2colSpec};

    /// Runs an im2col spec on `x` (a band from output row `first`) and returns its packed panels.
    fn run(spec: &Im2colSpec, x: &[f32], first: usize) -> Vec<f32> {
        use incept_runtime::Slot;
        // The band's first row as an i64, in the bits of two floats.
        let row = [f32::from_bits(first as u32), f32::from_bits(0)];
        let zeros = vec![0f32; spec.zero_row_bytes() / 4];
        let operands = vec![Slot::Input(0), Slot::Output(0), Slot::Input(1), Slot::Input(2)];
        run_step(&[Arc::new(spec.clone())], operands, spec.tiles(), &[x, &row, &zeros], spec.bytes() / 4)
    }

    /// Both fill modes (row mode unrolled and not) against a plain im2col over kernel shapes
    /// (square, 1x7, 7x1, wider than the input), strides, pads, dilations, maps narrower and
    /// wider than a panel, panel widths
    /// of every tier, groups and batch: every element of every panel, the zero columns past N
    /// included.
    #[test]
    fn im2col_matches_a_plain_one() {
        let (mut cases, mut rows, mut bands, mut unrolled, mut band_unrolled, mut band_loop) = (0, 0, 0, 0, 0, 0);
        for (kh, kw) in [(1, 1), (3, 3), (1, 7), (7, 1), (5, 5), (3, 1)] {
            for (s, p, d) in [(1, 0, 1), (1, 1, 1), (1, 3, 1), (2, 1, 1), (1, 2, 2), (2, 0, 1)] {
                // 40x37 is too big to unroll: row mode's run-time row loop without a band.
                for (h, w) in [(1, 5), (5, 5), (9, 17), (17, 9), (40, 37)] {
                    for nr in [4, 12, 16, 32] {
                        let (groups, batch) = if cases % 2 == 0 { (2, 2) } else { (1, 1) };
                        let (ekh, ekw) = ((kh - 1) * d + 1, (kw - 1) * d + 1);
                        if h + 2 * p < ekh || w + 2 * p < ekw {
                            continue;
                        }
                        let (oh, ow) = ((h + 2 * p - ekh) / s + 1, (w + 2 * p - ekw) / s + 1);
                        let g = Geom { h, w, kh, kw, sh: s, sw: s, ph: p, pw: p, dh: d, dw: d, oh, ow };
                        let cin = 3;
                        let c_total = cin * groups;
                        // Every third case packs a band of output rows (from the middle) only:
                        // two rows (unrolled), or on the 40x37 map half of them (too many to
                        // unroll for wide kernels: the run-time row loop, as big stems use).
                        let tall = if h == 40 { oh / 2 } else { 2 };
                        let band = (oh >= 2 && cases % 3 == 1).then(|| (oh / 3, (oh / 3 + tall).min(oh)));
                        let oy0 = band.map_or(0, |b| b.0);
                        bands += usize::from(band.is_some());
                        let spec = Im2colSpec {
                            batch: batch * groups,
                            groups,
                            c_total,
                            cin,
                            g,
                            nr,
                            band: band.map(|b| b.1 - b.0),
                        };
                        rows += usize::from(spec.row_mode());
                        unrolled += usize::from(spec.unrolled());
                        band_unrolled += usize::from(spec.band_unrolled());
                        band_loop += usize::from(band.is_some() && spec.row_mode() && !spec.band_unrolled());
                        let x: Vec<f32> = (0..batch * c_total * h * w).map(|i| 1.0 + i as f32).collect();
                        let got = run(&spec, &x, oy0);
                        let (k, n, pn) = (spec.k(), spec.n(), spec.panels());
                        let mut want = vec![0f32; spec.bytes() / 4];
                        for b in 0..batch * groups {
                            let (img, grp) = (b / groups, b % groups);
                            for ci in 0..cin {
                                for ky in 0..kh {
                                    for kx in 0..kw {
                                        let kk = (ci * kh + ky) * kw + kx;
                                        for col in 0..n {
                                            let (oy, ox) = (oy0 + col / ow, col % ow);
                                            let iy = (oy * s + ky * d) as i64 - p as i64;
                                            let ix = (ox * s + kx * d) as i64 - p as i64;
                                            if (0..h as i64).contains(&iy) && (0..w as i64).contains(&ix) {
                                                let ch = img * c_total + grp * cin + ci;
                                                want[((b * pn + col / nr) * k + kk) * nr + col % nr] =
                                                    x[(ch * h + iy as usize) * w + ix as usize];
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        let bad = got.iter().zip(&want).position(|(a, b)| a != b);
                        assert!(bad.is_none(), "{spec:?} (row mode {}): element {bad:?}", spec.row_mode());
                        cases += 1;
                    }
                }
            }
        }
        assert!(
            cases > 300
                && rows > 150
                && bands > 80
                && unrolled > 60
                && rows - unrolled - band_unrolled > 30
                && band_unrolled > 30
                && band_loop > 3,
            "{cases} cases, {rows} in row mode ({unrolled} unrolled, {band_unrolled} band-unrolled), {bands} bands \
             ({band_loop} on the run-time row loop)"
        );
    }
}
