//! Structure-aware fuzzing: the input picks a seed model (a fixture or a vendored single-op
//! model) and a list of mutations of its attributes, initializers, input shapes, node inputs,
//! op types and new nodes (`incept_tests::mutate`), and the mutated model goes as far through
//! incept as it can (`incept_tests::exercise`). libFuzzer's byte mutations become model
//! mutations, so coverage feedback steers them.
#![no_main]

use std::sync::OnceLock;

use incept_tests::exercise::{Budget, exercise_bytes};
use incept_tests::mutate::{Choices, FuzzBytes, Seed, importable_seeds, mutate};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn seeds() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(importable_seeds)
}

fuzz_target!(|data: &[u8]| {
    let seeds = seeds();
    assert!(!seeds.is_empty(), "no seed models found under tests/");
    let mut choices = FuzzBytes::new(data);
    let mut model = seeds[choices.below(seeds.len())].model.clone();
    let n = 1 + choices.below(8);
    mutate(&mut model, &mut choices, n);
    exercise_bytes(&model.encode_to_vec(), &Budget::default()).assert_consistent();
});
