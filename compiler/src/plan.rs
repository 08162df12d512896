//! Memory planning: every arena buffer gets an offset from its lifetime (first and last step
//! that touch it), placed greedily by size so that buffers alive at the same time never overlap.

use crate::lower::{LStep, Lowered, Place};

/// Arena offsets and size.
#[derive(Clone, Debug)]
pub struct ArenaPlan {
    /// Offset of each buffer (meaningful for arena buffers only).
    pub offsets: Vec<usize>,
    pub size: usize,
    /// The largest total size of buffers alive at once: no plan can be smaller.
    pub lower_bound: usize,
}

const ALIGN: usize = 64;

/// (first step, last step) of every buffer, if any step touches it.
fn lifetimes(n_buffers: usize, steps: &[LStep]) -> Vec<Option<(usize, usize)>> {
    let mut life: Vec<Option<(usize, usize)>> = vec![None; n_buffers];
    for (i, s) in steps.iter().enumerate() {
        for &b in s.reads.iter().chain(&s.writes) {
            life[b] = Some(match life[b] {
                None => (i, i),
                Some((a, _)) => (a, i),
            });
        }
    }
    life
}

/// Plans the arena of a lowered model.
pub fn plan_arena(l: &Lowered) -> ArenaPlan {
    let life = lifetimes(l.buffers.len(), &l.steps);
    let arena: Vec<usize> =
        (0..l.buffers.len()).filter(|&b| l.buffers[b].place == Place::Arena && life[b].is_some()).collect();
    // Lower bound: the peak of simultaneously live bytes.
    let mut lower_bound = 0;
    for t in 0..l.steps.len() {
        let live: usize = arena
            .iter()
            .filter(|&&b| life[b].is_some_and(|(s, e)| s <= t && t <= e))
            .map(|&b| l.buffers[b].bytes.next_multiple_of(ALIGN))
            .sum();
        lower_bound = lower_bound.max(live);
    }
    // Greedy by size (largest first), each at the lowest offset free during its lifetime.
    let mut order = arena.clone();
    order.sort_by_key(|&b| (std::cmp::Reverse(l.buffers[b].bytes), life[b].map(|x| x.0)));
    let mut placed: Vec<(usize, usize, usize, usize)> = vec![]; // (offset, end, first, last)
    let mut offsets = vec![0; l.buffers.len()];
    let mut size = 0;
    for b in order {
        let (s, e) = life[b].unwrap_or((0, 0));
        let bytes = l.buffers[b].bytes.next_multiple_of(ALIGN);
        let mut conflicts: Vec<(usize, usize)> =
            placed.iter().filter(|p| p.2 <= e && s <= p.3).map(|p| (p.0, p.1)).collect();
        conflicts.sort();
        let mut at = 0;
        for (o, end) in conflicts {
            if at + bytes <= o {
                break;
            }
            at = at.max(end);
        }
        offsets[b] = at;
        placed.push((at, at + bytes, s, e));
        size = size.max(at + bytes);
    }
    ArenaPlan { offsets, size, lower_bound }
}
