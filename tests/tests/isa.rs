//! The machine code of a plan uses only the CPU features the plan records (and the runtime
//! checks before loading it): every instruction of every kernel decoded, for each tier, on
//! models that reach every kernel family of the zoo's networks.

use iced_x86::{CpuidFeature, Decoder, DecoderOptions, Instruction};
use incept_compiler::{CompileOptions, Cpu};
use incept_tests::{FIXTURES, fixtures_dir};

/// The CPUID features a plan's recorded feature name allows.
fn allowed(features: &[String]) -> Vec<CpuidFeature> {
    let mut ok = vec![
        CpuidFeature::INTEL8086,
        CpuidFeature::INTEL386,
        CpuidFeature::INTEL486,
        CpuidFeature::INTEL186,
        CpuidFeature::INTEL286,
        CpuidFeature::X64,
        CpuidFeature::CMOV,
        CpuidFeature::SSE,
        CpuidFeature::SSE2,
        CpuidFeature::FPU,
        CpuidFeature::MULTIBYTENOP,
    ];
    for f in features {
        ok.extend(match f.as_str() {
            "sse3" => vec![CpuidFeature::SSE3],
            "ssse3" => vec![CpuidFeature::SSSE3],
            "sse4.1" => vec![CpuidFeature::SSE4_1],
            "sse4.2" => vec![CpuidFeature::SSE4_2],
            "popcnt" => vec![CpuidFeature::POPCNT],
            "avx" => vec![CpuidFeature::AVX],
            "avx2" => vec![CpuidFeature::AVX2],
            "fma" => vec![CpuidFeature::FMA],
            "bmi1" => vec![CpuidFeature::BMI1],
            "bmi2" => vec![CpuidFeature::BMI2],
            "lzcnt" => vec![CpuidFeature::LZCNT],
            "avx512f" => vec![CpuidFeature::AVX512F],
            "avx512bw" => vec![CpuidFeature::AVX512BW],
            "avx512bf16" => vec![CpuidFeature::AVX512_BF16],
            "amx-tile" => vec![CpuidFeature::AMX_TILE],
            "amx-bf16" => vec![CpuidFeature::AMX_BF16],
            other => panic!("a plan records an unknown feature '{other}'"),
        });
    }
    ok
}

/// Graphs for the kernels the fixtures' small maps do not reach: Winograd of both tiles on a
/// map with rows of sixteen tiles (the AVX-512 input groups), depthwise convs on a wide map
/// (rows) and a small one (whole planes),
/// a 1x1 conv of a computed value (read in place), a conv on a 7x7 map (transposed).
fn extra_graphs() -> Vec<(String, incept_ir::graph::Graph, Option<usize>)> {
    let conv = |c: usize, m: usize, h: usize, w: usize, k: usize, group: usize| {
        let pad = k / 2;
        format!(
            "graph g {{\n  input %x : f32[1,{c},{h},{w}]\n  %n = Neg(%x) : f32[1,{c},{h},{w}]\n  %w = const f32[{m},{},{k},{k}] random(1)\n  %y = Conv(%n, %w) {{kernel_shape=[{k}, {k}], pads=[{pad}, {pad}, {pad}, {pad}], group={group}}} : f32[1,{m},{h},{w}]\n  output %y\n}}\n",
            c / group
        )
    };
    let cases = [
        ("winograd2", conv(16, 16, 40, 70, 3, 1), Some(2)),
        ("winograd4", conv(16, 16, 40, 70, 3, 1), Some(4)),
        ("depthwise", conv(32, 32, 56, 56, 3, 32), None),
        ("depthwise_plane", conv(32, 32, 14, 14, 3, 32), None),
        ("conv1x1", conv(32, 48, 28, 28, 1, 1), None),
        ("small_map", conv(256, 256, 7, 7, 3, 1), None),
        // Activation chains: exp, erf, tanh, selects and divisions on the AVX-512 row kernel.
        ("elementwise", "graph g {\n  input %x : f32[1,3,20,21]\n  %a = Gelu(%x) : f32[1,3,20,21]\n  %b = Sigmoid(%a) : f32[1,3,20,21]\n  %c = Tanh(%b) : f32[1,3,20,21]\n  %d = Mul(%a, %c) : f32[1,3,20,21]\n  %e = Abs(%d) : f32[1,3,20,21]\n  %y = Sqrt(%e) : f32[1,3,20,21]\n  output %y\n}\n".to_string(), None),
    ];
    cases
        .into_iter()
        .map(|(name, src, tile)| {
            let g = incept_ir::text::parse(&src).unwrap_or_else(|e| panic!("{name}: {e}\n{src}"));
            (name.to_string(), g, tile)
        })
        .collect()
}

/// Decodes every kernel of a plan; asserts each instruction's CPUID features are among those
/// the plan records. The number of instructions decoded.
fn check_plan(name: &str, cpu: Cpu, plan: &incept_runtime::Plan) -> usize {
    let ok = allowed(&plan.features);
    let mut checked = 0;
    for k in &plan.kernels {
        let code = &plan.code[k.offset..k.offset + k.len];
        let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
        let mut ins = Instruction::default();
        while decoder.can_decode() {
            decoder.decode_out(&mut ins);
            if ins.is_invalid() {
                break;
            }
            for f in ins.cpuid_features() {
                assert!(
                    ok.contains(f),
                    "{name} ({cpu:?}), kernel '{}': {:?} at {:#x} needs {f:?}, the plan records {:?}",
                    k.name,
                    ins.code(),
                    ins.ip(),
                    plan.features
                );
            }
            checked += 1;
        }
    }
    checked
}

/// bf16 plans for each bf16 tier (compiled, not run: this CPU need not have the tier) use only
/// the features they record, and hold the bf16 kernels: VDPBF16PS microkernels, the pair
/// packers, and for AMX the tile configuration, TDPBF16PS microkernels and the release.
#[test]
fn bf16_plans_use_only_the_features_they_record() {
    use iced_x86::Mnemonic;
    for (cpu, kernels, mnemonics) in [
        (
            Cpu::Avx512Bf16,
            vec!["avx512bf16 microkernel", "bf16 pairs"],
            vec![Mnemonic::Vdpbf16ps, Mnemonic::Vcvtneps2bf16],
        ),
        (
            Cpu::Amx,
            vec!["amx microkernel", "bf16 pairs", "amx tile config", "amx tile release"],
            vec![
                Mnemonic::Tdpbf16ps,
                Mnemonic::Ldtilecfg,
                Mnemonic::Tileloadd,
                Mnemonic::Tilestored,
                Mnemonic::Tilerelease,
            ],
        ),
    ] {
        let mut checked = 0;
        let mut names = vec![];
        let mut seen = std::collections::HashSet::new();
        for name in FIXTURES {
            let path = fixtures_dir().join(format!("{name}.onnx"));
            let input = incept_ir::npy::read(&fixtures_dir().join(format!("{name}.input.npy"))).expect("input");
            let mut import = incept_ir::onnx::ImportOptions::default();
            import.input_shapes.insert("input".into(), input.shape().to_vec());
            let opts = CompileOptions {
                cpu,
                threads: 1,
                import,
                precision: incept_compiler::Precision::Bf16,
                ..Default::default()
            };
            let (plan, _) = incept_compiler::compile::compile_plan_with_report(path.as_path(), &opts)
                .unwrap_or_else(|e| panic!("{name} ({cpu:?}): {e}"));
            assert!(plan.features.iter().any(|f| f == "avx512bf16"), "{:?}", plan.features);
            checked += check_plan(name, cpu, &plan);
            for k in &plan.kernels {
                names.push(k.name.clone());
                let mut decoder = Decoder::with_ip(64, &plan.code[k.offset..k.offset + k.len], 0, DecoderOptions::NONE);
                for ins in decoder.iter() {
                    seen.insert(ins.mnemonic());
                }
            }
        }
        // A wide-map 3x3 conv: on AVX512-BF16 an implicit conv (planes, tap-looping microkernels).
        for (name, g, _) in extra_graphs() {
            let opts =
                CompileOptions { cpu, threads: 1, precision: incept_compiler::Precision::Bf16, ..Default::default() };
            let (plan, _) = incept_compiler::compile::compile_graph_to_plan(g, &opts)
                .unwrap_or_else(|e| panic!("{name} ({cpu:?}): {e}"));
            checked += check_plan(&name, cpu, &plan);
            names.extend(plan.kernels.iter().map(|k| k.name.clone()));
        }
        assert!(checked > 10_000, "{cpu:?}: only {checked} instructions decoded");
        for k in kernels {
            assert!(names.iter().any(|n| n.contains(k)), "{cpu:?}: no '{k}' kernel among {names:?}");
        }
        for m in mnemonics {
            assert!(seen.contains(&m), "{cpu:?}: no {m:?} in the bf16 plans");
        }
    }
}

#[test]
fn plans_use_only_the_features_they_record() {
    for cpu in incept_tests::graphs::tiers() {
        let mut checked = 0;
        let mut plans = vec![];
        for (name, g, winograd_tile) in extra_graphs() {
            let opts = CompileOptions { cpu, threads: 1, winograd_tile, ..Default::default() };
            let (model, _) =
                incept_compiler::compile_graph(g, &opts).unwrap_or_else(|e| panic!("{name} ({cpu:?}): {e}"));
            plans.push((name, model));
        }
        for name in FIXTURES {
            let path = fixtures_dir().join(format!("{name}.onnx"));
            let input = incept_ir::npy::read(&fixtures_dir().join(format!("{name}.input.npy"))).expect("input");
            let mut import = incept_ir::onnx::ImportOptions::default();
            import.input_shapes.insert("input".into(), input.shape().to_vec());
            let opts = CompileOptions { cpu, threads: 1, import, ..Default::default() };
            let (model, _) = incept_compiler::compile_with_report(path.as_path(), &opts)
                .unwrap_or_else(|e| panic!("{name} ({cpu:?}): {e}"));
            plans.push((name.to_string(), model));
        }
        for (name, model) in &plans {
            let plan = model.plan();
            if cpu == Cpu::Baseline {
                assert!(!plan.features.iter().any(|f| f.starts_with("avx") || f == "fma"), "{:?}", plan.features);
            }
            checked += check_plan(name, cpu, plan);
        }
        assert!(checked > 10_000, "{cpu:?}: only {checked} instructions decoded");
        // The kernels the extra graphs are for were among those decoded.
        let names: Vec<&str> =
            plans.iter().flat_map(|(_, m)| m.plan().kernels.iter().map(|k| k.name.as_str())).collect();
        let mut want = vec!["winograd input", "winograd4 input", "winograd4 output", "depthwise"];
        if cpu == Cpu::Avx512 {
            want.extend([
                "avx512 winograd input x16",
                "avx512 depthwise row",
                "avx512 depthwise plane",
                "transposed output",
            ]);
        }
        for w in want {
            assert!(names.iter().any(|n| n.contains(w)), "{cpu:?}: no '{w}' kernel among {names:?}");
        }
    }
}
