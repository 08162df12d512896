//! Memory planning: every arena buffer gets an offset from its lifetime (first and last step
//! that touch it), placed greedily by size so that buffers alive at the same time never overlap.

use crate::lower::{LStep, Lowered, Place};

/// Arena offsets and size.
#[derive(Clone, Debug)]
pub struct ArenaPlan {
    /// Offset of each buffer (meaningful for arena buffers only).
    pub offsets: Vec<usize>,
    pub size: usize,
    /// The largest total size of buffers alive at once (buffers sharing memory in place count
    /// once): no placement can be smaller.
    pub lower_bound: usize,
    /// Every arena buffer that some step uses, in order of first use.
    pub placements: Vec<Placement>,
}

/// Where one arena buffer lives and when.
#[derive(Clone, Debug)]
pub struct Placement {
    pub name: String,
    pub offset: usize,
    pub bytes: usize,
    /// First and last step that touch it.
    pub steps: (usize, usize),
    /// The buffer whose memory it takes over in place, if any.
    pub shares: Option<String>,
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
    let mut life = lifetimes(l.buffers.len(), &l.steps);
    // The status word is zeroed before the first step and read after checking ones: it lives
    // throughout.
    if let Some(b) = l.status {
        life[b] = Some((0, l.steps.len().saturating_sub(1)));
    }
    // In-place steps: a buffer written at the step its in-place source dies takes over the
    // source's memory (chains of them share one block).
    let mut root: Vec<usize> = (0..l.buffers.len()).collect();
    let find = |root: &Vec<usize>, mut b: usize| {
        while root[b] != b {
            b = root[b];
        }
        b
    };
    let is_arena = |b: usize| l.buffers[b].place == Place::Arena;
    let own_life = life.clone();
    for (i, s) in l.steps.iter().enumerate() {
        for &(r, w) in &s.in_place {
            let (r, w) = (find(&root, r), find(&root, w));
            let ok = r != w
                && is_arena(r)
                && is_arena(w)
                && l.buffers[r].bytes == l.buffers[w].bytes
                && life[r].is_some_and(|(_, e)| e == i)
                && life[w].is_some_and(|(s, _)| s == i);
            if ok {
                root[w] = r;
                life[r] = Some((life[r].map_or(i, |x| x.0), life[w].map_or(i, |x| x.1)));
            }
        }
    }
    let arena: Vec<usize> =
        (0..l.buffers.len()).filter(|&b| is_arena(b) && life[b].is_some() && find(&root, b) == b).collect();
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
    // Greedy placement in a few orders (largest first, longest-lived first, earliest first,
    // largest area of size x lifetime first); the smallest arena wins.
    let span = |b: usize| life[b].map_or(0, |(s, e)| e - s + 1);
    let bytes = |b: usize| l.buffers[b].bytes.next_multiple_of(ALIGN);
    let start = |b: usize| life[b].map_or(0, |x| x.0);
    let orders: [&dyn Fn(usize) -> (usize, usize); 4] = [
        &|b| (usize::MAX - bytes(b), start(b)),
        &|b| (usize::MAX - span(b), usize::MAX - bytes(b)),
        &|b| (start(b), usize::MAX - bytes(b)),
        &|b| (usize::MAX - bytes(b) * span(b), start(b)),
    ];
    let mut best: Option<(usize, Vec<usize>)> = None;
    for key in orders {
        let mut order = arena.clone();
        order.sort_by_key(|&b| key(b));
        for best_fit in [false, true] {
            let (size, offsets) = place(&order, l.buffers.len(), &life, &bytes, best_fit);
            if best.as_ref().is_none_or(|(s, _)| size < *s) {
                best = Some((size, offsets));
            }
        }
    }
    let (size, mut offsets) = best.unwrap_or((0, vec![0; l.buffers.len()]));
    for b in 0..l.buffers.len() {
        offsets[b] = offsets[find(&root, b)];
    }
    let mut placements: Vec<Placement> = (0..l.buffers.len())
        .filter_map(|b| {
            let steps = own_life[b]?;
            if !is_arena(b) {
                return None;
            }
            let r = find(&root, b);
            Some(Placement {
                name: l.buffers[b].name.clone(),
                offset: offsets[b],
                bytes: l.buffers[b].bytes,
                steps,
                shares: (r != b).then(|| l.buffers[root[b]].name.clone()),
            })
        })
        .collect();
    placements.sort_by_key(|p| p.steps);
    ArenaPlan { offsets, size, lower_bound, placements }
}

/// Places buffers in `order`, each at the lowest offset that does not overlap a placed buffer
/// alive at the same time. Returns the arena size and every buffer's offset.
fn place(
    order: &[usize],
    n_buffers: usize,
    life: &[Option<(usize, usize)>],
    bytes: &dyn Fn(usize) -> usize,
    best_fit: bool,
) -> (usize, Vec<usize>) {
    let mut placed: Vec<(usize, usize, usize, usize)> = vec![]; // (offset, end, first, last)
    let mut offsets = vec![0; n_buffers];
    let mut size = 0;
    for &b in order {
        let (s, e) = life[b].unwrap_or((0, 0));
        let n = bytes(b);
        let mut conflicts: Vec<(usize, usize)> =
            placed.iter().filter(|p| p.2 <= e && s <= p.3).map(|p| (p.0, p.1)).collect();
        conflicts.sort();
        // Gaps between the conflicting buffers; the space above them all is the last resort.
        let mut at = 0;
        let mut choice: Option<(usize, usize)> = None; // (gap size, offset)
        for (o, end) in conflicts {
            if at + n <= o {
                if !best_fit {
                    choice = Some((0, at));
                    break;
                }
                if choice.is_none_or(|(g, _)| o - at < g) {
                    choice = Some((o - at, at));
                }
            }
            at = at.max(end);
        }
        let at = choice.map_or(at, |(_, o)| o);
        offsets[b] = at;
        placed.push((at, at + n, s, e));
        size = size.max(at + n);
    }
    (size, offsets)
}
