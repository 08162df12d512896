//! `incept peak`: the FMA ceilings of one core, per kernel tier, and the core-to-core round trip.

use anyhow::Result;
use clap::Args;

/// Measure this CPU's FMA peaks on one core (f32x4, and AVX2 and AVX-512 where the CPU has them): the ceilings
/// incept's kernels are measured against.
///
/// Runs a JIT kernel of 12 independent f32x4 multiply-add chains (enough to hide the FMA latency
/// on both FMA ports) on the calling thread and reports the best of several runs in GFLOP/s
/// (one FMA on 4 lanes = 8 flops). `bench --profile` reports each GEMM's GFLOP/s; divide by this.
#[derive(Args)]
pub struct PeakArgs {
    /// Loop iterations per run (each does 12 f32x4 FMAs)
    #[arg(long, default_value_t = 20_000_000)]
    iterations: i64,
    /// Runs; the fastest counts
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Measure only the round trip of a cache line between two threads (see below) and print it
    #[arg(long)]
    core_to_core: bool,
}

pub fn run(a: PeakArgs) -> Result<()> {
    anyhow::ensure!(a.iterations > 0 && a.runs > 0, "--iterations and --runs must be positive");
    if a.core_to_core {
        println!("{}", round_trip_line(round_trip_ns(a.runs)));
        return Ok(());
    }
    use incept_compiler::codegen::peak;
    let g = peak::fma_peak_gflops(a.iterations, a.runs)?;
    println!("f32x4 FMA peak, one core: {g:.1} GFLOP/s (best of {} runs of {} x 12 FMAs)", a.runs, a.iterations);
    use incept_compiler::codegen::Tier;
    for tier in [Tier::Avx2, Tier::Avx512] {
        let name = tier.name().to_uppercase().replace("AVX512", "AVX-512");
        match peak::wide_peak_gflops(tier, a.iterations as usize, a.runs)? {
            Some(w) => {
                let (mr, nr) = (tier.panel_rows(1), tier.nr());
                println!(
                    "{name} FMA peak, one core: {w:.1} GFLOP/s (best of {} runs of {} iterations)",
                    a.runs, a.iterations
                );
                if let Some(u) = peak::wide_microkernel_gflops(tier, 256, 20_000, a.runs)? {
                    println!(
                        "{name} {mr}x{nr} GEMM microkernel, panels in L1 (K = 256): {u:.1} GFLOP/s ({:.0}% of the {name} peak)",
                        100.0 * u / w
                    );
                }
            }
            None => println!("{name} FMA peak: this CPU does not run the {} tier", tier.name()),
        }
    }
    // bf16: two multiply-adds per f32 lane per instruction.
    let f32_peak = peak::wide_peak_gflops(Tier::Avx512, a.iterations as usize, a.runs)?;
    match peak::bf16_peak_gflops(a.iterations as usize, a.runs)? {
        Some(b) => {
            let ratio = f32_peak.map(|f| format!(", {:.2}x the AVX-512 f32 peak", b / f)).unwrap_or_default();
            println!("AVX512-BF16 VDPBF16PS peak, one core: {b:.1} GFLOP/s (best of {} runs{ratio})", a.runs);
            if let Some(u) = peak::bf16_microkernel_gflops(256, 20_000, a.runs)? {
                println!(
                    "AVX512-BF16 12x32 GEMM microkernel, panels in L1 (K = 256): {u:.1} GFLOP/s ({:.0}% of the AVX512-BF16 peak)",
                    100.0 * u / b
                );
            }
        }
        None => println!("AVX512-BF16 peak: this CPU has no AVX512-BF16"),
    }
    match peak::vnni_peak_gops(a.iterations as usize, a.runs)? {
        Some(p) => {
            let ratio = f32_peak.map(|f| format!(", {:.2}x the AVX-512 f32 FMA peak", p / f)).unwrap_or_default();
            println!("AVX512-VNNI VPDPBUSD peak, one core: {p:.1} GOP/s (2 per multiply-add{ratio})");
            if let Some(g) = peak::vnni_microkernel_gops(256, 20_000, a.runs)? {
                println!(
                    "AVX512-VNNI 12x32 int8 GEMM microkernel, panels in L1 (K = 256): {g:.1} GOP/s ({:.0}% of the VPDPBUSD \
                     peak; `bench --profile` reports the int8 GEMMs' GFLOP/s on the same count)",
                    100.0 * g / p
                );
            }
        }
        None => println!("AVX512-VNNI peak: this CPU has no AVX512-VNNI"),
    }
    // Each iteration is four tile products of 16 x 16 x 32 multiply-adds: far fewer are needed.
    match peak::amx_peak_gflops((a.iterations as usize / 64).max(1), a.runs)? {
        Some(g) => {
            println!("AMX TDPBF16PS peak, one core: {g:.1} GFLOP/s (best of {} runs, four tile accumulators)", a.runs)
        }
        None => match incept_runtime::cpu::tile_state() {
            Ok(()) => println!("AMX bf16 peak: this CPU lacks AMX-BF16 or AVX-512"),
            Err(why) => println!("AMX bf16 peak: no AMX here ({why})"),
        },
    }
    println!("{}", round_trip_line(round_trip_ns(a.runs)));
    Ok(())
}

fn round_trip_line(ns: f64) -> String {
    format!(
        "core to core: a cache line's round trip between two spinning threads {ns:.0} ns (median of runs); \
         where it is several hundred ns the two cores share no L3 (on a VM, vCPUs placed on different \
         CCDs or sockets), and runs at two threads are slower (ResNet50 bf16 12.5 against 9.4 ms on the \
         EPYC VM where 380-430 and 80-120 ns were measured)"
    )
}

/// Two threads pass a counter back and forth through one cache line; the median over `runs` of
/// the time per round trip. The OS places the threads (on a two-CPU VM, one per vCPU).
fn round_trip_ns(runs: usize) -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    #[repr(align(128))]
    struct Line(AtomicU64);
    const TRIPS: u64 = 100_000;
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let line = Line(AtomicU64::new(0));
            std::thread::scope(|s| {
                s.spawn(|| {
                    for i in 0..TRIPS {
                        while line.0.load(Ordering::Acquire) != 2 * i + 1 {
                            std::hint::spin_loop();
                        }
                        line.0.store(2 * i + 2, Ordering::Release);
                    }
                });
                let t = std::time::Instant::now();
                for i in 0..TRIPS {
                    line.0.store(2 * i + 1, Ordering::Release);
                    while line.0.load(Ordering::Acquire) != 2 * i + 2 {
                        std::hint::spin_loop();
                    }
                }
                t.elapsed().as_secs_f64() * 1e9 / TRIPS as f64
            })
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
