//! All-pairs covering tables for the differential tests: every pair of levels of every two
//! dimensions appears in at least one row, so a bug that needs two conditions at once (an epilogue
//! add *and* no bias) cannot slip through a table the way it slips through random draws.
//!
//! Dimensions may be irrelevant in some rows (a residual's shape when the epilogue has no add):
//! `active` says so, and a pair is only required where some valid row makes both of its
//! dimensions active. Tables are built by a deterministic greedy cover over every valid row, so
//! the same dimensions always give the same table.

/// One dimension of a table and the names of its levels.
#[derive(Clone, Debug)]
pub struct Dim {
    pub name: &'static str,
    pub levels: Vec<&'static str>,
}

impl Dim {
    pub fn new(name: &'static str, levels: &[&'static str]) -> Dim {
        assert!(!levels.is_empty(), "dimension {name} has no levels");
        Dim { name, levels: levels.to_vec() }
    }
}

/// A row of a table: one level per dimension, readable by dimension name.
#[derive(Clone, Debug)]
pub struct Row<'a> {
    pub dims: &'a [Dim],
    pub levels: Vec<usize>,
}

impl Row<'_> {
    /// The level of dimension `name`, by its own name.
    pub fn get(&self, name: &str) -> &'static str {
        let d = self.dims.iter().position(|d| d.name == name).unwrap_or_else(|| panic!("no dimension {name}"));
        self.dims[d].levels[self.levels[d]]
    }

    /// `dim=level` for every dimension, for failure messages.
    pub fn describe(&self) -> String {
        self.dims
            .iter()
            .zip(&self.levels)
            .map(|(d, &l)| format!("{}={}", d.name, d.levels[l]))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Rows covering every pair of levels of every two dimensions that can occur together.
/// `valid(row)` excludes impossible rows; `active(row, dim)` says whether a dimension matters in
/// that row (when it does not, its pairs are not counted as covered by the row).
///
/// Greedy: each step takes the row that covers the most pairs not yet covered (then the most
/// levels not yet seen), the first such row in enumeration order. A row's score only falls as
/// rows are taken, so scores kept from earlier steps bound the current ones from above: a step
/// rescores rows best-bound first and stops at the first whose current score beats every other
/// bound (lazy greedy, which picks exactly what rescoring every row would).
pub fn cover<'a>(dims: &'a [Dim], valid: impl Fn(&Row) -> bool, active: impl Fn(&Row, &str) -> bool) -> Vec<Row<'a>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let total: usize = dims.iter().map(|d| d.levels.len()).product();
    assert!(total <= 6_000_000, "a table of {total} rows is too large to enumerate");
    // Dense ids: one per (dimension, level), one per pair of them across two dimensions.
    let level_base: Vec<usize> = dims
        .iter()
        .scan(0, |at, d| {
            let base = *at;
            *at += d.levels.len();
            Some(base)
        })
        .collect();
    let n_levels: usize = dims.iter().map(|d| d.levels.len()).sum();
    let pair_id = |i: usize, li: usize, j: usize, lj: usize| (level_base[i] + li) * n_levels + level_base[j] + lj;
    // Per valid row: its pair ids, then its active level ids, in one flat list.
    let mut rows_of: Vec<Row> = vec![];
    let (mut ids, mut spans): (Vec<u32>, Vec<(usize, usize, usize)>) = (vec![], vec![]);
    for mut index in 0..total {
        let mut levels = vec![0; dims.len()];
        for (d, dim) in dims.iter().enumerate().rev() {
            levels[d] = index % dim.levels.len();
            index /= dim.levels.len();
        }
        let row = Row { dims, levels };
        if !valid(&row) {
            continue;
        }
        let on: Vec<bool> = dims.iter().map(|d| active(&row, d.name)).collect();
        let start = ids.len();
        for i in 0..dims.len() {
            for j in i + 1..dims.len() {
                if on[i] && on[j] {
                    ids.push(pair_id(i, row.levels[i], j, row.levels[j]) as u32);
                }
            }
        }
        let mid = ids.len();
        ids.extend((0..dims.len()).filter(|&d| on[d]).map(|d| (level_base[d] + row.levels[d]) as u32));
        spans.push((start, mid, ids.len()));
        rows_of.push(row);
    }
    assert!(!rows_of.is_empty(), "no valid row");
    let n_pairs = n_levels * n_levels;
    let (mut uncovered, mut unseen) = (vec![false; n_pairs], vec![false; n_levels]);
    let (mut left_pairs, mut left_levels) = (0usize, 0usize);
    for &(start, mid, end) in &spans {
        for &p in &ids[start..mid] {
            left_pairs += !uncovered[p as usize] as usize;
            uncovered[p as usize] = true;
        }
        for &l in &ids[mid..end] {
            left_levels += !unseen[l as usize] as usize;
            unseen[l as usize] = true;
        }
    }
    let score = |k: usize, uncovered: &[bool], unseen: &[bool]| {
        let (start, mid, end) = spans[k];
        let p = ids[start..mid].iter().filter(|&&p| uncovered[p as usize]).count();
        let s = ids[mid..end].iter().filter(|&&l| unseen[l as usize]).count();
        p * 16 + s
    };
    // Max-heap on (score bound, earliest row first).
    let mut heap: BinaryHeap<(usize, Reverse<usize>)> =
        (0..rows_of.len()).map(|k| (score(k, &uncovered, &unseen), Reverse(k))).collect();
    let mut rows = vec![];
    while left_pairs > 0 || left_levels > 0 {
        let best = loop {
            let (_, Reverse(k)) = heap.pop().expect("pairs left that no row covers");
            let now = (score(k, &uncovered, &unseen), Reverse(k));
            if heap.peek().is_none_or(|top| now >= *top) {
                break now;
            }
            heap.push(now);
        };
        let (s, Reverse(k)) = best;
        assert!(s > 0, "pairs left that no row covers");
        let (start, mid, end) = spans[k];
        for &p in &ids[start..mid] {
            left_pairs -= uncovered[p as usize] as usize;
            uncovered[p as usize] = false;
        }
        for &l in &ids[mid..end] {
            left_levels -= unseen[l as usize] as usize;
            unseen[l as usize] = false;
        }
        rows.push(rows_of[k].clone());
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// A pair of (dimension, level) assignments, as (dim i, level, dim j, level).
    type Pair = (usize, usize, usize, usize);

    /// The cover as first written: every row rescored at every step (the oracle of `cover`).
    /// Rows covering every pair of levels of every two dimensions that can occur together.
    /// `valid(row)` excludes impossible rows; `active(row, dim)` says whether a dimension matters in
    /// that row (when it does not, its pairs are not counted as covered by the row).
    fn exhaustive_cover<'a>(
        dims: &'a [Dim],
        valid: impl Fn(&Row) -> bool,
        active: impl Fn(&Row, &str) -> bool,
    ) -> Vec<Row<'a>> {
        let total: usize = dims.iter().map(|d| d.levels.len()).product();
        assert!(total <= 6_000_000, "a table of {total} rows is too large to enumerate");
        let mut candidates: Vec<(Row, Vec<Pair>)> = vec![];
        for mut index in 0..total {
            let mut levels = vec![0; dims.len()];
            for (d, dim) in dims.iter().enumerate().rev() {
                levels[d] = index % dim.levels.len();
                index /= dim.levels.len();
            }
            let row = Row { dims, levels };
            if !valid(&row) {
                continue;
            }
            let on: Vec<bool> = dims.iter().map(|d| active(&row, d.name)).collect();
            let mut pairs = vec![];
            for i in 0..dims.len() {
                for j in i + 1..dims.len() {
                    if on[i] && on[j] {
                        pairs.push((i, row.levels[i], j, row.levels[j]));
                    }
                }
            }
            candidates.push((row, pairs));
        }
        assert!(!candidates.is_empty(), "no valid row");
        let mut uncovered: HashSet<Pair> = candidates.iter().flat_map(|(_, p)| p.iter().copied()).collect();
        let mut rows = vec![];
        // Every single level that can be active must appear too, even in a one-dimensional table.
        let mut unseen: HashSet<(usize, usize)> = HashSet::new();
        for (row, _) in &candidates {
            for (d, dim) in dims.iter().enumerate() {
                if active(row, dim.name) {
                    unseen.insert((d, row.levels[d]));
                }
            }
        }
        let mut taken = vec![false; candidates.len()];
        while !uncovered.is_empty() || !unseen.is_empty() {
            let score = |(row, pairs): &(Row, Vec<Pair>)| {
                let p = pairs.iter().filter(|p| uncovered.contains(p)).count();
                let s = dims
                    .iter()
                    .enumerate()
                    .filter(|(d, dim)| unseen.contains(&(*d, row.levels[*d])) && active(row, dim.name))
                    .count();
                p * 16 + s
            };
            let (best, _) = candidates
                .iter()
                .enumerate()
                .filter(|(i, _)| !taken[*i])
                .map(|(i, c)| (i, score(c)))
                .fold((usize::MAX, 0), |acc, (i, s)| if s > acc.1 { (i, s) } else { acc });
            assert!(best != usize::MAX, "pairs left that no row covers");
            taken[best] = true;
            let (row, pairs) = &candidates[best];
            for p in pairs {
                uncovered.remove(p);
            }
            for (d, dim) in dims.iter().enumerate() {
                if active(row, dim.name) {
                    unseen.remove(&(d, row.levels[d]));
                }
            }
            rows.push(row.clone());
        }
        rows
    }

    #[test]
    fn every_active_pair_is_covered() {
        let dims = vec![
            Dim::new("a", &["0", "1", "2"]),
            Dim::new("b", &["x", "y"]),
            Dim::new("c", &["p", "q", "r", "s"]),
            Dim::new("d", &["on", "off"]),
        ];
        // c only matters when d is on; a=2 never goes with b=y.
        let valid = |r: &Row| !(r.get("a") == "2" && r.get("b") == "y");
        let active = |r: &Row, name: &str| name != "c" || r.get("d") == "on";
        let rows = cover(&dims, valid, active);
        assert!(rows.len() < 3 * 2 * 4 * 2, "{} rows is no better than exhaustive", rows.len());
        for i in 0..dims.len() {
            for j in i + 1..dims.len() {
                for li in 0..dims[i].levels.len() {
                    for lj in 0..dims[j].levels.len() {
                        let possible = |r: &Row| {
                            valid(r)
                                && r.levels[i] == li
                                && r.levels[j] == lj
                                && active(r, dims[i].name)
                                && active(r, dims[j].name)
                        };
                        // Is the pair possible at all? (Enumerate every row.)
                        let exists = (0..3 * 2 * 4 * 2).any(|mut k| {
                            let mut levels = vec![0; 4];
                            for (d, dim) in dims.iter().enumerate().rev() {
                                levels[d] = k % dim.levels.len();
                                k /= dim.levels.len();
                            }
                            possible(&Row { dims: &dims, levels })
                        });
                        if exists {
                            assert!(
                                rows.iter().any(possible),
                                "pair {}={} {}={} not covered",
                                dims[i].name,
                                dims[i].levels[li],
                                dims[j].name,
                                dims[j].levels[lj]
                            );
                        }
                    }
                }
            }
        }
    }

    /// The lazy greedy picks the rows the exhaustive greedy picks, row for row, on tables with
    /// impossible rows and dimensions that are inactive in some rows (the real tables were
    /// checked the same way when the lazy form replaced the exhaustive one: all 14 of
    /// jit_epilogues' families gave the same 76 rows).
    #[test]
    fn lazy_greedy_picks_what_exhaustive_greedy_picks() {
        let names = ["a", "b", "c", "d", "e", "f", "g"];
        let levels = ["0", "1", "2", "3", "4", "5"];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..40 {
            let dims: Vec<Dim> = (0..2 + next(6)).map(|d| Dim::new(names[d], &levels[..1 + next(6)])).collect();
            let (forbid, gate) = (next(3), next(dims.len()));
            let valid = |r: &Row| r.levels[0] + r.levels[r.levels.len() - 1] != forbid + 1;
            let active = |r: &Row, name: &str| name != dims[gate].name || r.levels[0] != 0;
            if !(0..dims.iter().map(|d| d.levels.len()).product()).any(|mut k: usize| {
                let mut lv = vec![0; dims.len()];
                for (d, dim) in dims.iter().enumerate().rev() {
                    lv[d] = k % dim.levels.len();
                    k /= dim.levels.len();
                }
                valid(&Row { dims: &dims, levels: lv })
            }) {
                continue;
            }
            let lazy: Vec<Vec<usize>> = cover(&dims, valid, active).into_iter().map(|r| r.levels).collect();
            let full: Vec<Vec<usize>> = exhaustive_cover(&dims, valid, active).into_iter().map(|r| r.levels).collect();
            assert_eq!(lazy, full, "{dims:?}");
        }
    }
}
