//! Random graphs for the differential tests of the JIT: a builder with a seeded generator, and the
//! check that compiles a graph every way (full passes at 2 threads, no passes at 1 thread), runs
//! it and compares every output with the reference interpreter.

use incept_compiler::passes::Pipeline;
use incept_compiler::{CompileOptions, Cpu, Fault, Precision, compile_graph, from_runtime, to_runtime};
use incept_ir::attrs::{AttrValue, Attrs};
use incept_ir::graph::ValueId;
use incept_ir::shape::TensorType;
use incept_ir::text::parse::SplitMix;
use incept_ir::{DType, Graph, Op, Tensor, interp};

/// A random graph under construction.
pub struct Gen {
    pub g: Graph,
    pub rng: SplitMix,
    k: usize,
    /// What was built, for failure messages.
    pub desc: Vec<String>,
    /// Graph outputs besides the one the family returns.
    pub extra: Vec<ValueId>,
}

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen { g: Graph::new("prop"), rng: SplitMix(seed), k: 0, desc: vec![], extra: vec![] }
    }

    /// Uniform in `lo..=hi`.
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.rng.next_u64() % (hi - lo + 1) as u64) as usize
    }

    pub fn coin(&mut self) -> bool {
        self.rng.next_u64() & 1 == 1
    }

    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.int(0, items.len() - 1)].clone()
    }

    pub fn name(&mut self, base: &str) -> String {
        self.k += 1;
        format!("{base}{}", self.k)
    }

    pub fn input(&mut self, dims: &[usize]) -> ValueId {
        let name = self.name("x");
        self.g.add_input(&name, TensorType::known(DType::F32, dims)).expect("input")
    }

    /// A graph input of another dtype than f32.
    pub fn input_of(&mut self, dtype: DType, dims: &[usize]) -> ValueId {
        let name = self.name("x");
        self.g.add_input(&name, TensorType::known(dtype, dims)).expect("input")
    }

    pub fn random(&mut self, dims: &[usize]) -> Tensor {
        let n = dims.iter().product();
        Tensor::from_vec(dims.to_vec(), (0..n).map(|_| self.rng.uniform() as f32).collect())
    }

    pub fn konst(&mut self, t: Tensor) -> ValueId {
        let name = self.name("c");
        self.g.add_const(&name, t).expect("const")
    }

    pub fn weights(&mut self, dims: &[usize]) -> ValueId {
        let t = self.random(dims);
        self.konst(t)
    }

    /// Weights uniform in `[-scale, scale)`.
    pub fn weights_scaled(&mut self, dims: &[usize], scale: f32) -> ValueId {
        let n = dims.iter().product();
        let t = Tensor::from_vec(dims.to_vec(), (0..n).map(|_| self.rng.uniform() as f32 * scale).collect());
        self.konst(t)
    }

    pub fn ints(&mut self, v: &[i64]) -> ValueId {
        self.konst(Tensor::from_vec(vec![v.len()], v.to_vec()))
    }

    /// Adds a node; `None` when the random attributes are invalid for the op.
    pub fn op(&mut self, op: &str, attrs: Vec<(&str, AttrValue)>, inputs: Vec<Option<ValueId>>) -> Option<ValueId> {
        self.op_n(op, attrs, inputs, 1).map(|v| v[0])
    }

    /// A node with `n` outputs.
    pub fn op_n(
        &mut self,
        op: &str,
        attrs: Vec<(&str, AttrValue)>,
        inputs: Vec<Option<ValueId>>,
        n: usize,
    ) -> Option<Vec<ValueId>> {
        self.desc.push(format!("{op} {attrs:?}"));
        let attrs = Attrs::new(attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        let op = Op::from_attrs(op, attrs).ok()?;
        let name = self.name("n");
        let outs = (0..n).map(|i| format!("{name}_{i}")).collect();
        let id = self.g.add_node(&name, op, inputs, outs).ok()?;
        Some((0..n).map(|i| ValueId::new(id, i)).collect())
    }

    pub fn shape(&self, v: ValueId) -> Vec<usize> {
        self.g.ty(v).static_dims().expect("static")
    }
}

pub fn ints(v: &[usize]) -> AttrValue {
    AttrValue::Ints(v.iter().map(|&x| x as i64).collect())
}

/// The largest |got - want| over max(1, max |want|), NaNs equal to NaNs.
pub fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    if got.shape() != want.shape() {
        return f64::INFINITY;
    }
    let (a, b) = (got.to_f64s().expect("numeric"), want.to_f64s().expect("numeric"));
    let scale = b.iter().filter(|v| v.is_finite()).fold(1f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .map(|(x, y)| {
            if x.is_nan() && y.is_nan() || x == y {
                0.0
            } else if x.is_nan() || y.is_nan() {
                f64::INFINITY
            } else {
                (x - y).abs() / scale
            }
        })
        .fold(0.0, f64::max)
}

/// Random data of a dtype: floats uniform in [-1, 1), integers small (-9..=9, or 0..=18 when
/// unsigned) so that arithmetic on them neither always overflows nor always gives 0.
pub fn random_of(rng: &mut SplitMix, dtype: DType, dims: Vec<usize>) -> Tensor {
    let n: usize = dims.iter().product();
    let mut small = || (rng.next_u64() % 19) as i64 - 9;
    macro_rules! ints {
        ($t:ty, $shift:expr) => {
            Tensor::from_vec(dims, (0..n).map(|_| (small() + $shift) as $t).collect::<Vec<$t>>())
        };
    }
    match dtype {
        DType::F64 => Tensor::from_vec(dims, (0..n).map(|_| rng.uniform()).collect::<Vec<f64>>()),
        DType::I8 => ints!(i8, 0),
        DType::I16 => ints!(i16, 0),
        DType::I32 => ints!(i32, 0),
        DType::I64 => ints!(i64, 0),
        DType::U8 => ints!(u8, 9),
        DType::U16 => ints!(u16, 9),
        DType::U32 => ints!(u32, 9),
        DType::U64 => ints!(u64, 9),
        DType::Bool => Tensor::from_bools(dims, (0..n).map(|_| small() > 0).collect()),
        _ => Tensor::from_vec(dims, (0..n).map(|_| rng.uniform() as f32).collect::<Vec<f32>>()),
    }
}

/// Every kernel tier this CPU runs: the f32x4 baseline, and AVX2, AVX-512 and AVX-512 with VNNI
/// where the CPU has them (widest last).
pub fn tiers() -> Vec<Cpu> {
    use incept_compiler::codegen::Tier;
    let mut t = vec![Cpu::Baseline];
    let host = Tier::host();
    if matches!(host, Tier::Avx2 | Tier::Avx512) {
        t.push(Cpu::Avx2);
    }
    // The AVX2 tier with the AVX-VNNI int8 tile (the plain avx2 tier runs the VPMADDWD one).
    if matches!(host, Tier::Avx2 | Tier::Avx512) && incept_compiler::codegen::int8::Int8Isa::AvxVnni.on_host() {
        t.push(Cpu::AvxVnni);
    }
    if host == Tier::Avx512 {
        t.push(Cpu::Avx512);
    }
    // The AVX-512 tier with the VNNI int8 convs: the same as avx512 but for quantized convs.
    if host == Tier::Avx512 && incept_compiler::codegen::int8::host_has_vnni() {
        t.push(Cpu::Avx512Vnni);
    }
    t
}

/// The tiers with vector int8 plane and elementwise kernels this CPU runs, each with the suffix
/// of its kernels' names: AVX-512 and AVX2.
pub fn int8_vector_tiers() -> Vec<(Cpu, &'static str)> {
    let mut t = vec![];
    if std::arch::is_x86_feature_detected!("avx512bw") {
        t.push((Cpu::Avx512, "avx512"));
    }
    if std::arch::is_x86_feature_detected!("avx2") {
        t.push((Cpu::Avx2, "avx2"));
    }
    t
}

/// The ways each graph is compiled and run: all pairs of (full passes or none) x (1 or 2
/// threads) x (each tier this CPU runs), in as few runs as cover them.
pub fn ways() -> Vec<(Pipeline, usize, Cpu)> {
    // Tiers alternate between the two diagonals of (passes x threads), widest first, so that
    // every tier meets both pass settings and both thread counts, and the first two tiers
    // together cover all four (passes, threads) pairs; one tier alone takes all four.
    let tiers = tiers();
    let mut w = vec![];
    for (i, &tier) in tiers.iter().rev().enumerate() {
        let diagonals: &[[usize; 2]] = if tiers.len() == 1 {
            &[[2, 1], [1, 2]]
        } else if i % 2 == 0 {
            &[[2, 1]]
        } else {
            &[[1, 2]]
        };
        for &[full, none] in diagonals {
            w.push((Pipeline::Full, full, tier));
            w.push((Pipeline::Explicit(vec![]), none, tier));
        }
    }
    w
}

/// The ways a graph is compiled and run in bf16: each bf16 tier this CPU runs (none: the bf16
/// checks have nothing to run here), with and without passes, at 1 and 2 threads.
pub fn bf16_ways() -> Vec<(Pipeline, usize, Cpu)> {
    use incept_compiler::codegen::bf16::Bf16Tier;
    let mut w = vec![];
    for (t, cpu) in [(Bf16Tier::Amx, Cpu::Amx), (Bf16Tier::Avx512Bf16, Cpu::Avx512Bf16)] {
        if t.runs_here() {
            w.push((Pipeline::Full, 2, cpu));
            w.push((Pipeline::Explicit(vec![]), 1, cpu));
        }
    }
    w
}

/// The graph with every f32 constant and the f32 inputs rounded to bf16: what a bf16 plan of it
/// multiplies exactly, so that the interpreter on it differs from the plan only by the order of
/// f32 sums (the bf16 checks then hold the plan to the f32 tolerance: a misplaced pair, a tail
/// read wrongly or a lost epilogue shows as in f32).
pub fn rounded_to_bf16(g: &Graph, inputs: &[Tensor]) -> (Graph, Vec<Tensor>) {
    use incept_compiler::codegen::bf16::round_bf16;
    let round = |t: &Tensor| -> Tensor {
        match t.view::<f32>() {
            Ok(v) if t.dtype() == DType::F32 => {
                Tensor::from_vec(t.shape().to_vec(), v.iter().map(|&x| round_bf16(x)).collect::<Vec<f32>>())
            }
            _ => t.clone(),
        }
    };
    let mut g = g.clone();
    let ids: Vec<_> = g.node_ids().collect();
    for id in ids {
        if let Op::Const(c) = &mut g.node_mut(id).op {
            c.value = round(&c.value);
        }
    }
    (g, inputs.iter().map(round).collect())
}

/// How a graph is checked.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// f32, or bf16: the graph's constants and inputs rounded to bf16 (see `rounded_to_bf16`),
    /// compiled in bf16 on each bf16 tier this CPU runs, and every conv the plan computes in bf16
    /// named in `bf16_nodes` checked to be so.
    pub precision: Precision,
    /// A deliberate miscompilation (mutation checks: the tests must then fail).
    pub fault: Option<Fault>,
    /// Step ops (as in profiles: "DepthwiseConv", "WinogradOutput", ...) of which at least one
    /// must appear in the fully optimised plan, so a family really reaches the kernel it is for.
    pub expect_step: Vec<&'static str>,
    /// Step ops that must not appear in the optimised plan (e.g. "Epilogue": the epilogue must be
    /// fused into the kernel, not run as a separate pass).
    pub forbid_step: Vec<&'static str>,
    /// Passed to the compiler: pack conv panels in bands of output rows above this size.
    pub im2col_band_bytes: Option<usize>,
    /// Passed to the compiler: the Winograd tile (2 or 4) where Winograd applies.
    pub winograd_tile: Option<usize>,
    /// In bf16: the plan must hold a bf16 GEMM (the family's op is one bf16 applies to).
    pub expect_bf16: bool,
    /// A kernel whose name contains this must be in the fully optimised plan for the AVX-512
    /// tier (where the CPU has it), so a family really reaches the machine code it is for.
    pub expect_kernel: Option<&'static str>,
    /// Passed to the compiler: the least row fill of a bf16 implicit conv (0: every one).
    pub implicit_min_fill: Option<f64>,
    /// f32 outputs must equal the interpreter's bit for bit (the family's kernels compute as the
    /// reference does, e.g. dequantizing), not merely within the relative bound.
    pub exact: bool,
}

/// Compiles and runs `r`'s graph (output `out`) every way and compares with the interpreter;
/// the error names the family, case, pipeline and threads and prints the graph. Returns the step
/// ops of the fully optimised plan for the widest tier.
pub fn check(mut r: Gen, out: ValueId, family: &str, case: &str, opts: &CheckOptions) -> Result<Vec<String>, String> {
    let mut outs = vec![out];
    outs.extend(r.extra.iter().copied());
    r.g.set_outputs(outs);
    let g = r.g;
    let inputs: Vec<Tensor> = g
        .input_values()
        .into_iter()
        .map(|v| {
            let dims = g.ty(v).static_dims().expect("static");
            random_of(&mut r.rng, g.ty(v).dtype, dims)
        })
        .collect();
    let bf16 = opts.precision == Precision::Bf16;
    let (g, inputs) = if bf16 { rounded_to_bf16(&g, &inputs) } else { (g, inputs) };
    let text = incept_ir::text::print(&g).unwrap_or_default();
    let want = interp::run(&g, &inputs).map_err(|e| format!("{family} {case}: interpreter: {e}\n{text}"))?;
    let rt: Vec<_> = inputs.iter().map(|t| to_runtime(t).expect("input")).collect();
    let mut plan_ops = vec![];
    // PROP_MUTATE=1 corrupts every graph's first output (a check of the checks: every case must
    // then fail).
    let fault = match std::env::var_os("PROP_MUTATE") {
        Some(_) => Some(Fault::Corrupt { node: g.node(g.outputs()[0].node).name.clone() }),
        None => opts.fault.clone(),
    };
    let ways = if bf16 { bf16_ways() } else { ways() };
    for (pipeline, threads, cpu) in ways {
        let copts = CompileOptions {
            pipeline: pipeline.clone(),
            threads,
            cpu,
            precision: opts.precision,
            fault: fault.clone(),
            im2col_band_bytes: opts.im2col_band_bytes,
            winograd_tile: opts.winograd_tile,
            implicit_min_fill: opts.implicit_min_fill,
            ..Default::default()
        };
        let (model, _) = compile_graph(g.clone(), &copts)
            .map_err(|e| format!("{family} {case} ({pipeline:?}, {cpu:?}): compile: {e}\n{:?}\n{text}", r.desc))?;
        if pipeline == Pipeline::Full {
            let ops: Vec<&str> = model.plan().steps.iter().map(|s| s.op.as_str()).collect();
            if !opts.expect_step.is_empty() && !opts.expect_step.iter().any(|e| ops.contains(e)) {
                return Err(format!("{family} {case}: no {:?} step in the plan: {ops:?}\n{text}", opts.expect_step));
            }
            if let Some(f) = opts.forbid_step.iter().find(|f| ops.contains(f)) {
                return Err(format!("{family} {case}: a {f} step in the plan: {ops:?}\n{text}"));
            }
            if let (Some(want), Cpu::Avx512) = (opts.expect_kernel, cpu) {
                let plan = model.plan();
                if !plan.kernels.iter().any(|k| k.name.contains(want)) {
                    return Err(format!("{family} {case}: no '{want}' kernel in the plan: {ops:?}\n{text}"));
                }
            }
            if bf16 && opts.expect_bf16 {
                let tier = cpu.bf16_tier().expect("a bf16 CPU").name();
                let plan = model.plan();
                if !plan.steps.iter().any(|s| plan.kernels[s.kernel].name.ends_with(tier)) {
                    return Err(format!("{family} {case}: no {tier} GEMM in the bf16 plan: {ops:?}\n{text}"));
                }
            }
            // The widest tier's plan (the first of `ways`).
            if plan_ops.is_empty() {
                plan_ops = ops.iter().map(|s| s.to_string()).collect();
            }
        }
        // Every arena float NaN first: a kernel reading bytes no step wrote shows.
        model.fill_arena_for_testing(0xFF);
        let got = model.run(&rt).map_err(|e| format!("{family} {case}: run: {e}"))?;
        for (k, (got, want)) in got.iter().zip(&want).enumerate() {
            let got = from_runtime(got).expect("output");
            // Integer, bool and f64 results are exact (the f64 kernels follow the reference's
            // order of operations).
            let same_f64 = || {
                let (a, b) = (got.to_f64s().expect("f64"), want.to_f64s().expect("f64"));
                a.len() == b.len()
                    && a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits() || x.is_nan() && y.is_nan())
            };
            let err = if (want.dtype() == DType::F64 && got.dtype() == DType::F64)
                || (opts.exact && want.dtype() == DType::F32)
            {
                if same_f64() { 0.0 } else { f64::INFINITY }
            } else if want.dtype().is_float() {
                rel_err(&got, want)
            } else if got.same_content(want) {
                0.0
            } else {
                f64::INFINITY
            };
            if err > 1e-4 && std::env::var_os("PROP_DEBUG").is_some() {
                eprintln!("got {:?}\nwant {:?}", got.to_f64s(), want.to_f64s());
            }
            if err.is_nan() || err > 1e-4 {
                return Err(format!(
                    "{family} {case} ({pipeline:?}, {threads} threads, {cpu:?}), output {k}: error {err:e}\n{:?}\n{text}",
                    r.desc
                ));
            }
        }
    }
    Ok(plan_ops)
}

/// Runs `cases` random graphs of one family; `build` returns `None` for an invalid draw, and at
/// least half the draws must be valid so the family is really exercised.
pub fn family(name: &str, seed: u64, cases: usize, build: impl Fn(&mut Gen) -> Option<ValueId>) {
    family_with(name, seed, cases, &CheckOptions::default(), build)
}

/// [`family`] with check options.
pub fn family_with(
    name: &str,
    seed: u64,
    cases: usize,
    opts: &CheckOptions,
    build: impl Fn(&mut Gen) -> Option<ValueId>,
) {
    let mut valid = 0;
    for case in 0..cases {
        let s = seed.wrapping_mul(1000).wrapping_add(case as u64);
        let mut r = Gen::new(s);
        if let Some(out) = build(&mut r) {
            valid += 1;
            if let Err(e) = check(r, out, name, &format!("#{case} (seed {s})"), opts) {
                panic!("{e}");
            }
        }
    }
    println!("{name}: {valid} of {cases} random graphs checked");
    assert!(valid * 2 >= cases, "{name}: only {valid} of {cases} random draws were valid graphs");
}

/// One spatial extent that leaves at least one output for the window.
pub fn extent(r: &mut Gen, k: usize, s: usize, d: usize, pb: usize, pe: usize) -> usize {
    let eff = (k - 1) * d + 1;
    eff.saturating_sub(pb + pe).max(1) + r.int(0, 3 * s + 4)
}
