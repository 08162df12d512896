//! Fuzzes the table checks that stand between an artifact and running its code: the input is a
//! list of edits to mini_resnet's plan (compiled once for this CPU's widest tier, so its steps
//! call microkernels too): tile counts, operand slots, offsets, extents and directions, the
//! kernels a step calls, the kernel table, the arena, the status word, input and output shapes
//! and dtypes, operands and steps dropped or swapped. The edited plan is resealed (as if the
//! compiler itself had written it wrong), written as an artifact, read back and, if it loads,
//! run on the fixture input. Refusals are the expected answer; a crash, a hang or a panic is a
//! bug. The unsealed edit must be refused whenever it changed the plan.
//!
//! One thing the table checks take on trust: constants in the weights that some kernels address
//! memory through (Winograd tile positions, resampling taps, im2col band rows). Their bytes are
//! the digest's and the signature's to vouch for and their place the seal's, so a plan whose
//! weights operands point elsewhere in the weights than the compiler put them is loaded but not
//! run here.
#![no_main]

use std::sync::OnceLock;

use incept_runtime::artifact::{ArtifactInfo, decode, encode};
use incept_runtime::{DType, Model, Plan, RunOptions, Slot, Tensor};
use libfuzzer_sys::fuzz_target;

struct Base {
    plan: Plan,
    info: ArtifactInfo,
    input: Tensor,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = incept_tests::fixtures_dir();
        let opts = incept_compiler::CompileOptions { threads: 1, ..Default::default() };
        let model = incept_compiler::compile(&dir.join("mini_resnet.onnx"), &opts).expect("compile");
        let input = incept_runtime::npy::read(dir.join("mini_resnet.input.npy")).expect("input");
        Base { plan: model.plan().clone(), info: incept_compiler::artifact_info(&opts), input }
    })
}

/// Reads edits off the input: a selector byte, two index bytes and eight value bytes each.
fn edit(p: &mut Plan, sel: u8, i: usize, v: u64) {
    let v = v as usize;
    let small = v % 4096;
    let dtypes = [DType::F32, DType::U8, DType::F64, DType::Bool, DType::I32, DType::I64];
    let n_steps = p.steps.len().max(1);
    let n_kernels = p.kernels.len().max(1);
    match sel % 20 {
        0 => {
            if let Some(s) = p.steps.get_mut(i % n_steps) {
                s.tiles = v;
            }
        }
        1..=4 => {
            let Some(s) = p.steps.get_mut(i % n_steps) else { return };
            let n = s.operands.len().max(1);
            let Some(o) = s.operands.get_mut((i / n_steps) % n) else { return };
            match sel % 20 {
                1 => o.offset = if v % 2 == 0 { small } else { v },
                2 => o.extent = if v % 2 == 0 { small } else { v },
                3 => o.writes = !o.writes,
                _ => {
                    o.slot = match v % 6 {
                        0 => Slot::Arena,
                        1 => Slot::Weights,
                        2 => Slot::Input(small % 3),
                        3 => Slot::Output(small % 3),
                        4 => Slot::Helpers,
                        _ => Slot::Kernel(small % n_kernels),
                    }
                }
            }
        }
        5 => {
            if let Some(s) = p.steps.get_mut(i % n_steps) {
                s.kernel = v % (n_kernels + 1);
            }
        }
        6 => {
            if let Some(k) = p.kernels.get_mut(i % n_kernels) {
                k.offset = small;
            }
        }
        7 => {
            if let Some(k) = p.kernels.get_mut(i % n_kernels) {
                k.len = small;
            }
        }
        8 => {
            if let Some(k) = p.kernels.get_mut(i % n_kernels) {
                k.tiles = v;
            }
        }
        9 => {
            if let Some(k) = p.kernels.get_mut(i % n_kernels) {
                let n = k.operands.len().max(1);
                if let Some(need) = k.operands.get_mut(v % n) {
                    need.extent = small;
                    need.writes = v & 0x1000 != 0;
                }
            }
        }
        10 => p.arena_size = if v % 2 == 0 { small * 64 } else { v },
        11 => p.status = (v % 3 != 0).then_some(small),
        12 => {
            let list = if v % 2 == 0 { &mut p.inputs } else { &mut p.outputs };
            if let Some(io) = list.first_mut() {
                let rank = io.shape.len().max(1);
                if let Some(d) = io.shape.get_mut(i % rank) {
                    *d = if v & 0x100 != 0 { v >> 9 } else { small % 70 };
                }
            }
        }
        13 => {
            let list = if v % 2 == 0 { &mut p.inputs } else { &mut p.outputs };
            if let Some(io) = list.first_mut() {
                io.dtype = dtypes[small % dtypes.len()];
            }
        }
        14 => {
            if let Some(s) = p.steps.get_mut(i % n_steps) {
                let n = s.operands.len();
                if n >= 2 {
                    s.operands.swap(v % n, (v / n) % n);
                }
            }
        }
        15 => {
            if let Some(s) = p.steps.get_mut(i % n_steps)
                && !s.operands.is_empty()
            {
                let n = s.operands.len();
                s.operands.remove(v % n);
            }
        }
        16 => {
            let n = p.steps.len();
            if n >= 2 {
                p.steps.swap(v % n, (v / n) % n);
            }
        }
        17 => {
            if !p.steps.is_empty() {
                let n = p.steps.len();
                p.steps.remove(v % n);
            }
        }
        18 => {
            if let Some(k) = p.kernels.get_mut(i % n_kernels) {
                k.calls.push(small % n_kernels);
            }
        }
        _ => {
            if let Some(s) = p.steps.get_mut(i % n_steps)
                && let Some(o) = s.operands.first().copied()
            {
                s.operands.push(o);
            }
        }
    }
}

/// The input under the plan's (edited) input spec, when the fixture's bytes fit it.
fn input_for(plan: &Plan, original: &Tensor) -> Option<Tensor> {
    let spec = plan.inputs.first()?;
    Tensor::from_bytes(spec.dtype, &spec.shape, original.bytes()).ok()
}

fuzz_target!(|data: &[u8]| {
    let base = base();
    let mut plan = base.plan.clone();
    for e in data.chunks_exact(11).take(8) {
        edit(&mut plan, e[0], u16::from_le_bytes([e[1], e[2]]) as usize, u64::from_le_bytes(e[3..11].try_into().unwrap()));
    }
    // Edited after sealing: refused unless nothing changed.
    if plan.fingerprint() != base.plan.seal {
        assert!(decode(&encode(&plan, &base.info)).is_err(), "an edited plan loaded past its seal");
    }
    // Resealed: the table checks alone must keep it from crashing.
    plan.seal();
    let Ok((plan, _)) = decode(&encode(&plan, &base.info)) else { return };
    let weights_at = |p: &Plan| -> Vec<(usize, usize, usize)> {
        let mut v: Vec<_> = p
            .steps
            .iter()
            .flat_map(|s| {
                s.operands.iter().enumerate().filter(|(_, o)| o.slot == Slot::Weights).map(move |(i, o)| (s.kernel, i, o.offset))
            })
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let known = weights_at(&base.plan);
    if weights_at(&plan).iter().any(|w| known.binary_search(w).is_err()) {
        return;
    }
    let Ok(model) = Model::new(plan, &RunOptions { threads: 1 }) else { return };
    if let Some(x) = input_for(model.plan(), &base.input) {
        let _ = model.run(&[x]);
    }
});
