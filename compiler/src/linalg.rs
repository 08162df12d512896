//! Small dense linear algebra in f64 for weight rewrites: a one-sided Jacobi SVD and a Cholesky
//! solver for least squares. Matrices are row-major.

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
}
