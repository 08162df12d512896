//! Small dense linear algebra in f64 for weight rewrites: a one-sided Jacobi SVD, a cheap
//! rigorous lower bound on what a low-rank approximation must leave out (to skip the SVD of
//! weights that cannot factor), and a Cholesky solver for least squares. Matrices are row-major.

/// A dense row-major matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Mat {
    pub fn zeros(rows: usize, cols: usize) -> Mat {
        Mat { rows, cols, data: vec![0.0; rows * cols] }
    }

    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> f64) -> Mat {
        let mut m = Mat::zeros(rows, cols);
        for r in 0..rows {
            for c in 0..cols {
                m.data[r * cols + c] = f(r, c);
            }
        }
        m
    }

    pub fn at(&self, r: usize, c: usize) -> f64 {
        self.data[r * self.cols + c]
    }

    pub fn transpose(&self) -> Mat {
        Mat::from_fn(self.cols, self.rows, |r, c| self.at(c, r))
    }

    /// Frobenius norm.
    pub fn norm(&self) -> f64 {
        self.data.iter().map(|v| v * v).sum::<f64>().sqrt()
    }
}

/// `a = u * diag(s) * vt`, singular values in decreasing order.
pub struct Svd {
    /// rows x k
    pub u: Mat,
    /// k values, decreasing
    pub s: Vec<f64>,
    /// k x cols
    pub vt: Mat,
}

impl Svd {
    /// Relative Frobenius error of keeping the first `rank` singular values.
    pub fn truncation_error(&self, rank: usize) -> f64 {
        let total: f64 = self.s.iter().map(|v| v * v).sum();
        if total == 0.0 {
            return 0.0;
        }
        let rest: f64 = self.s.iter().skip(rank).map(|v| v * v).sum();
        (rest.max(0.0) / total).sqrt()
    }

    /// The smallest rank whose truncation error is at most `tol`.
    pub fn rank_for(&self, tol: f64) -> usize {
        (0..=self.s.len()).find(|&r| self.truncation_error(r) <= tol).unwrap_or(self.s.len())
    }
}

/// Singular value decomposition by one-sided Jacobi rotations (Hestenes): accurate for the small
/// matrices weight rewrites need (a few hundred rows and columns).
pub fn svd(a: &Mat) -> Svd {
    if a.rows < a.cols {
        let t = svd(&a.transpose());
        return Svd { u: t.vt.transpose(), s: t.s, vt: t.u.transpose() };
    }
    let (m, n) = (a.rows, a.cols);
    // Work on the columns of A (stored as rows of `w`) and accumulate V likewise.
    let mut w = a.transpose().data;
    let mut v = Mat::from_fn(n, n, |r, c| if r == c { 1.0 } else { 0.0 }).data;
    for _sweep in 0..80 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let (cp, cq) = (&w[p * m..(p + 1) * m], &w[q * m..(q + 1) * m]);
                let alpha: f64 = cp.iter().map(|x| x * x).sum();
                let beta: f64 = cq.iter().map(|x| x * x).sum();
                let gamma: f64 = cp.iter().zip(cq).map(|(x, y)| x * y).sum();
                if gamma.abs() <= 1e-15 * (alpha * beta).sqrt() || gamma == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for k in 0..m {
                    let (x, y) = (w[p * m + k], w[q * m + k]);
                    w[p * m + k] = c * x - s * y;
                    w[q * m + k] = s * x + c * y;
                }
                for k in 0..n {
                    let (x, y) = (v[p * n + k], v[q * n + k]);
                    v[p * n + k] = c * x - s * y;
                    v[q * n + k] = s * x + c * y;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let norms: Vec<f64> = (0..n).map(|j| w[j * m..(j + 1) * m].iter().map(|x| x * x).sum::<f64>().sqrt()).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| norms[y].total_cmp(&norms[x]));
    let u = Mat::from_fn(m, n, |r, c| {
        let j = order[c];
        if norms[j] > 0.0 { w[j * m + r] / norms[j] } else { 0.0 }
    });
    let vt = Mat::from_fn(n, n, |r, c| v[order[r] * n + c]);
    Svd { u, s: order.iter().map(|&j| norms[j]).collect(), vt }
}

/// Whether the relative error of truncating every matrix of `parts` to rank `rank` (the root of
/// the summed tails over the summed squared norms, as [`Svd::truncation_error`] measures one)
/// certainly exceeds `tol`, decided without an SVD. `false` means "maybe not": only the SVD can
/// tell.
///
/// The SVD never measures less than the true error by more than rounding (it drops whole
/// columns of `a V` with `V` orthogonal to rounding, and no subspace of that dimension holds
/// less energy than the smallest singular values), so proving 1.5 `tol` leaves ample room.
/// Each part aims at its share of (3 `tol`)^2 so that parts with no room above `rank` (an
/// all-zero channel, an exactly low-rank block) can miss without sinking the sum.
pub fn truncation_error_exceeds(parts: &[Mat], rank: usize, tol: f64) -> bool {
    let energies: Vec<f64> = parts.iter().map(|p| p.data.iter().map(|v| v * v).sum()).collect();
    let total: f64 = energies.iter().sum();
    if !(total > 0.0 && total.is_finite() && tol >= 0.0) {
        return false;
    }
    let proven: f64 =
        parts.iter().zip(&energies).map(|(p, e)| tail_energy_bound(p, rank, (3.0 * tol).powi(2) * e)).sum();
    proven > (1.5 * tol).powi(2) * total
}

/// A lower bound on `sum_{j > rank} s_j^2`, the squared Frobenius error that every rank-`rank`
/// approximation of `a` leaves, that holds despite rounding. It only tries to reach `want` (and
/// returns about `want` when it does), so that proving a full-rank matrix far from low rank
/// costs one Gram matrix and a pivoted Cholesky or two instead of an SVD; 0 when it shows
/// nothing (including for non-finite entries).
///
/// Why it holds: if the Cholesky of `G_S - lambda I` succeeds for a set `S` of `q` columns of `a`
/// (`G = a^T a`), every eigenvalue of `G_S` is at least `lambda`, so the singular values of the
/// submatrix `a_S` are at least `sqrt(lambda)`; removing columns only lowers singular values
/// (interlacing), so `s_j(a) >= s_j(a_S)` and the `q - rank` values past `rank` give
/// `(q - rank) lambda`. Rounding moves the computed Gram matrix by at most `gamma_m ||a||_F^2`,
/// and a Cholesky that runs to completion is exact for a matrix within `gamma_{q+1}` times its
/// trace (Higham, Accuracy and Stability of Numerical Algorithms, ch. 3 and 10), so `lambda`
/// is discounted by four times the sum of both.
pub fn tail_energy_bound(a: &Mat, rank: usize, want: f64) -> f64 {
    // The Gram matrix of the shorter side: same nonzero singular values, smaller.
    let (long, n) = (a.rows.max(a.cols), a.rows.min(a.cols));
    if rank >= n || want.is_nan() || want <= 0.0 {
        return 0.0;
    }
    let g = gram(a);
    let total: f64 = (0..n).map(|i| g[i * n + i]).sum();
    if !(total > 0.0 && total.is_finite()) {
        return 0.0;
    }
    let slack = 4.0 * (long + n + 4) as f64 * f64::EPSILON * total;
    // First ask for all n columns at the smallest shift that would do; when the pivoted
    // Cholesky stops early (some columns depend on others), ask again for the columns it
    // managed at the larger shift that would then do.
    let (mut best, mut cols) = (0f64, n);
    for _ in 0..3 {
        let lambda = want / (cols - rank) as f64 + slack;
        let q = positive_pivots(&g, n, lambda);
        if q > rank {
            best = best.max((q - rank) as f64 * (lambda - slack));
        }
        if best >= want || q <= rank || q >= cols {
            break;
        }
        cols = q;
    }
    best
}

/// The Gram matrix of the shorter side of `a` (n x n, n = min(rows, cols)), row-major.
fn gram(a: &Mat) -> Vec<f64> {
    let dot = |x: &[f64], y: &[f64]| {
        // Four partial sums let the loop vectorise; any order has the same error bound.
        let mut acc = [0f64; 4];
        let (xc, yc) = (x.chunks_exact(4), y.chunks_exact(4));
        let tail: f64 = xc.remainder().iter().zip(yc.remainder()).map(|(p, q)| p * q).sum();
        for (p, q) in xc.zip(yc) {
            for k in 0..4 {
                acc[k] += p[k] * q[k];
            }
        }
        acc.iter().sum::<f64>() + tail
    };
    // Rows are contiguous: take the product with the side whose vectors are rows.
    let t;
    let m = if a.rows <= a.cols {
        a
    } else {
        t = a.transpose();
        &t
    };
    let (n, len) = (m.rows, m.cols);
    let mut g = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let v = dot(&m.data[i * len..(i + 1) * len], &m.data[j * len..(j + 1) * len]);
            g[i * n + j] = v;
            g[j * n + i] = v;
        }
    }
    g
}

/// How many steps the Cholesky of `g - lambda I` (n x n) takes with complete (diagonal)
/// pivoting before no positive pivot is left: the size of the principal submatrix it proved
/// positive definite.
fn positive_pivots(g: &[f64], n: usize, lambda: f64) -> usize {
    let mut h = g.to_vec();
    for i in 0..n {
        h[i * n + i] -= lambda;
    }
    for k in 0..n {
        let (p, d) =
            (k..n).map(|i| (i, h[i * n + i])).fold((k, f64::NEG_INFINITY), |b, x| if x.1 > b.1 { x } else { b });
        if d.is_nan() || d <= 0.0 {
            return k;
        }
        if p != k {
            for c in 0..n {
                h.swap(k * n + c, p * n + c);
            }
            for r in 0..n {
                h.swap(r * n + k, r * n + p);
            }
        }
        // Schur complement of the pivot, in place (LDL^T without the square roots).
        let (head, rest) = h.split_at_mut((k + 1) * n);
        let pivot_row = &head[k * n..];
        for row in rest.chunks_exact_mut(n) {
            let f = row[k] / d;
            if f == 0.0 {
                continue;
            }
            for c in k + 1..n {
                row[c] -= f * pivot_row[c];
            }
        }
    }
    n
}

/// Solves `a x = b` for symmetric positive definite `a` (n x n) and `b` (n x k) in place by
/// Cholesky, with a tiny ridge so that rank-deficient normal equations still solve.
pub fn solve_spd(a: &Mat, b: &Mat) -> Mat {
    let n = a.rows;
    let scale = (0..n).map(|i| a.at(i, i)).fold(0f64, f64::max).max(1e-300);
    let mut l = a.clone();
    for i in 0..n {
        l.data[i * n + i] += 1e-12 * scale;
    }
    for j in 0..n {
        let mut d = l.at(j, j) - (0..j).map(|k| l.at(j, k) * l.at(j, k)).sum::<f64>();
        if d <= 0.0 {
            d = 1e-300;
        }
        let d = d.sqrt();
        l.data[j * n + j] = d;
        for i in j + 1..n {
            let s = l.at(i, j) - (0..j).map(|k| l.at(i, k) * l.at(j, k)).sum::<f64>();
            l.data[i * n + j] = s / d;
        }
    }
    let mut x = b.clone();
    let k = b.cols;
    for c in 0..k {
        for i in 0..n {
            let s = x.at(i, c) - (0..i).map(|j| l.at(i, j) * x.at(j, c)).sum::<f64>();
            x.data[i * k + c] = s / l.at(i, i);
        }
        for i in (0..n).rev() {
            let s = x.at(i, c) - (i + 1..n).map(|j| l.at(j, i) * x.at(j, c)).sum::<f64>();
            x.data[i * k + c] = s / l.at(i, i);
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(a: &Mat, b: &Mat) -> Mat {
        Mat::from_fn(a.rows, b.cols, |r, c| (0..a.cols).map(|k| a.at(r, k) * b.at(k, c)).sum())
    }

    fn pseudo_random(rows: usize, cols: usize, seed: u64) -> Mat {
        let mut s = seed;
        Mat::from_fn(rows, cols, |_, _| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
    }

    #[test]
    fn svd_reconstructs_and_finds_rank() {
        for (m, n) in [(7, 5), (5, 9), (30, 30)] {
            let a = pseudo_random(m, n, 3);
            let d = svd(&a);
            let us = Mat::from_fn(d.u.rows, d.u.cols, |r, c| d.u.at(r, c) * d.s[c]);
            let back = product(&us, &d.vt);
            let err = back.data.iter().zip(&a.data).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            assert!(err < 1e-12, "{m}x{n}: {err}");
            assert!(d.s.windows(2).all(|w| w[0] >= w[1]));
        }
        // A rank-3 product is rank 3.
        let a = product(&pseudo_random(12, 3, 5), &pseudo_random(3, 10, 6));
        let d = svd(&a);
        assert_eq!(d.rank_for(1e-9), 3);
        assert!(d.truncation_error(2) > 1e-3);
    }

    #[test]
    fn cholesky_solves() {
        let b = pseudo_random(6, 6, 9);
        let a = product(&b.transpose(), &b);
        let x = pseudo_random(6, 2, 10);
        let rhs = product(&a, &x);
        let got = solve_spd(&a, &rhs);
        let err = got.data.iter().zip(&x.data).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
        assert!(err < 1e-6, "{err}");
    }

    /// `u diag(s) v^T` (m x n, m >= n = s.len()) with random orthonormal `u` and `v`.
    fn with_singular_values(m: usize, s: &[f64], seed: u64) -> Mat {
        let n = s.len();
        let u = svd(&pseudo_random(m, n, seed)).u;
        let v = svd(&pseudo_random(n, n, seed + 1)).u;
        Mat::from_fn(m, n, |r, c| (0..n).map(|k| u.at(r, k) * s[k] * v.at(c, k)).sum())
    }

    fn tail(d: &Svd, rank: usize) -> f64 {
        d.s.iter().skip(rank).map(|v| v * v).sum()
    }

    #[test]
    fn tail_energy_bound_stays_below_the_tail() {
        let mut mats = vec![];
        for (k, (m, n)) in [(7, 5), (5, 9), (30, 30), (40, 25), (20, 60)].into_iter().enumerate() {
            mats.push(pseudo_random(m, n, 20 + k as u64));
        }
        // Exactly low rank, a zero column block, decaying values down to rounding, and zero.
        mats.push(product(&pseudo_random(30, 4, 30), &pseudo_random(4, 24, 31)));
        let mut z = pseudo_random(12, 16, 32);
        z.data.iter_mut().enumerate().filter(|(i, _)| i % 16 < 5).for_each(|(_, v)| *v = 0.0);
        mats.push(z);
        mats.push(with_singular_values(24, &(0..16).map(|k| 10f64.powi(-k)).collect::<Vec<_>>(), 33));
        mats.push(Mat::zeros(6, 4));
        for a in &mats {
            let d = svd(a);
            let total = a.norm().powi(2);
            for rank in 0..=d.s.len() {
                let t = tail(&d, rank);
                for want in [0.5 * t, t, 4.0 * t, 1e-12 * total, 1e-30 * total] {
                    let b = tail_energy_bound(a, rank, want);
                    assert!(
                        b >= 0.0 && b <= t * (1.0 + 1e-9) + 1e-28 * total,
                        "{}x{} rank {rank}: {b} > {t}",
                        a.rows,
                        a.cols
                    );
                }
            }
        }
    }

    /// The pre-check against the SVD at ranks around a cut-off where the singular values drop to
    /// a level that puts the truncation error at multiples of the tolerance around 1.
    #[test]
    fn truncation_error_exceeds_agrees_with_the_svd() {
        let mut checked = 0;
        for (m, n, r0) in [(20, 12, 5), (30, 30, 14), (40, 24, 1), (13, 9, 8)] {
            for tol in [1e-6, 1e-5, 1e-2] {
                for f in [0.0f64, 0.3, 0.9, 0.99, 1.0, 1.01, 1.1, 1.6, 3.0, 4.0, 10.0, 1e3] {
                    // r0 values of about 1, then n - r0 equal ones giving error f * tol at r0.
                    let head: Vec<f64> = (0..r0).map(|k| 1.0 + 0.1 * k as f64).rev().collect();
                    let h2: f64 = head.iter().map(|v| v * v).sum();
                    let e2 = (f * tol).powi(2).min(0.5);
                    let t = (e2 * h2 / (1.0 - e2) / (n - r0) as f64).sqrt();
                    let s: Vec<f64> = head.iter().copied().chain(std::iter::repeat_n(t, n - r0)).collect();
                    let a = with_singular_values(m, &s, (m * n + r0) as u64);
                    let d = svd(&a);
                    for rank in [r0.saturating_sub(1), r0, r0 + 1] {
                        let err = d.truncation_error(rank);
                        for a in [&a, &a.transpose()] {
                            let exceeds = truncation_error_exceeds(std::slice::from_ref(a), rank, tol);
                            assert!(!exceeds || err > tol, "{m}x{n} r0 {r0} rank {rank} tol {tol} f {f}: error {err}");
                            if err > 4.0 * tol && rank >= r0 {
                                assert!(exceeds, "{m}x{n} r0 {r0} rank {rank} tol {tol} f {f}: missed error {err}");
                            }
                            checked += usize::from(exceeds);
                        }
                    }
                }
            }
        }
        assert!(checked > 100, "{checked}");
    }

    #[test]
    fn truncation_error_exceeds_sums_parts() {
        let tol = 1e-6;
        let random = pseudo_random(16, 9, 40);
        let low = product(&pseudo_random(16, 2, 41), &pseudo_random(2, 9, 42));
        // A zero part adds nothing and needs nothing; a random part carries the sum.
        assert!(truncation_error_exceeds(&[Mat::zeros(16, 9), random.clone()], 4, tol));
        assert!(truncation_error_exceeds(&[low.clone(), random.clone()], 4, tol));
        // Exactly low-rank parts alone never exceed; neither does nothing at all.
        assert!(!truncation_error_exceeds(&[low.clone(), low], 2, tol));
        assert!(!truncation_error_exceeds(&[Mat::zeros(3, 3)], 1, tol));
        assert!(!truncation_error_exceeds(&[], 1, tol));
        // Full rank kept: no error.
        assert!(!truncation_error_exceeds(std::slice::from_ref(&random), 9, tol));
        // Non-finite entries decide nothing.
        let mut nan = random;
        nan.data[3] = f64::NAN;
        assert!(!truncation_error_exceeds(&[nan], 1, tol));
    }
}
