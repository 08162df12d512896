//! All-pairs covering tables for the differential tests: every pair of levels of every two
//! dimensions appears in at least one row, so a bug that needs two conditions at once (an epilogue
//! add *and* no bias) cannot slip through a table the way it slips through random draws.
//!
//! Dimensions may be irrelevant in some rows (a residual's shape when the epilogue has no add):
//! `active` says so, and a pair is only required where some valid row makes both of its
//! dimensions active. Tables are built by a deterministic greedy cover over every valid row, so
//! the same dimensions always give the same table.

use std::collections::HashSet;

/// A pair of (dimension, level) assignments, as (dim i, level, dim j, level).
type Pair = (usize, usize, usize, usize);

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
pub fn cover<'a>(dims: &'a [Dim], valid: impl Fn(&Row) -> bool, active: impl Fn(&Row, &str) -> bool) -> Vec<Row<'a>> {
    let total: usize = dims.iter().map(|d| d.levels.len()).product();
    assert!(total <= 2_000_000, "a table of {total} rows is too large to enumerate");
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
