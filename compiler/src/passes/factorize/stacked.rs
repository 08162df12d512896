//! Alternating least squares for the stacked form: a KxK kernel as a (K-2)x(K-2) conv followed by
//! a 3x3 conv, `W[o, i, k] = sum_{m, b} B[o, m, b] * A[m, i, k - b]` (2-D offsets, no
//! nonlinearity between). Each half-step is a linear least-squares problem whose normal matrix
//! is built from correlations of the fixed factor, which keeps it cheap.

use crate::linalg::{Mat, solve_spd};

/// A stack of per-(out, in) square kernels: `data[(o * ins + i) * size * size + y * size + x]`.
#[derive(Clone, Debug)]
pub struct Kernels {
    pub outs: usize,
    pub ins: usize,
    pub size: usize,
    pub data: Vec<f64>,
}

impl Kernels {
    pub fn zeros(outs: usize, ins: usize, size: usize) -> Kernels {
        Kernels { outs, ins, size, data: vec![0.0; outs * ins * size * size] }
    }

    fn at(&self, o: usize, i: usize, y: usize, x: usize) -> f64 {
        self.data[((o * self.ins + i) * self.size + y) * self.size + x]
    }

    /// Swaps the roles of outputs and inputs.
    pub fn transposed(&self) -> Kernels {
        let mut t = Kernels::zeros(self.ins, self.outs, self.size);
        let s2 = self.size * self.size;
        for o in 0..self.outs {
            for i in 0..self.ins {
                let src = (o * self.ins + i) * s2;
                let dst = (i * self.outs + o) * s2;
                t.data[dst..dst + s2].copy_from_slice(&self.data[src..src + s2]);
            }
        }
        t
    }

    pub fn norm(&self) -> f64 {
        self.data.iter().map(|v| v * v).sum::<f64>().sqrt()
    }
}

/// The composite kernel of `a` (first, mid x in) followed by `b` (then, out x mid).
pub fn compose(b: &Kernels, a: &Kernels) -> Kernels {
    let k = a.size + b.size - 1;
    let mut w = Kernels::zeros(b.outs, a.ins, k);
    for o in 0..b.outs {
        for m in 0..b.ins {
            for by in 0..b.size {
                for bx in 0..b.size {
                    let bv = b.at(o, m, by, bx);
                    if bv == 0.0 {
                        continue;
                    }
                    for i in 0..a.ins {
                        for ay in 0..a.size {
                            for ax in 0..a.size {
                                let idx = ((o * a.ins + i) * k + ay + by) * k + ax + bx;
                                w.data[idx] += bv * a.at(m, i, ay, ax);
                            }
                        }
                    }
                }
            }
        }
    }
    w
}

/// Given the first factor `a` (mid x in, size p), the least-squares second factor (out x mid,
/// size q = K - p + 1) for the target `w` (out x in, size K).
pub fn solve_second(a: &Kernels, w: &Kernels) -> Kernels {
    let (m, p, k) = (a.outs, a.size, w.size);
    let q = k + 1 - p;
    let n = m * q * q;
    let r = q as isize - 1;
    let span = (2 * r + 1) as usize;
    // corr[m1][m2][dy][dx] = sum_i sum_a A[m1, i, a] * A[m2, i, a + d]
    let mut corr = vec![0f64; m * m * span * span];
    for m1 in 0..m {
        for m2 in 0..m {
            for dy in -r..=r {
                for dx in -r..=r {
                    let mut s = 0.0;
                    for i in 0..a.ins {
                        for ay in 0..p as isize {
                            let by = ay + dy;
                            if by < 0 || by >= p as isize {
                                continue;
                            }
                            for ax in 0..p as isize {
                                let bx = ax + dx;
                                if bx < 0 || bx >= p as isize {
                                    continue;
                                }
                                s += a.at(m1, i, ay as usize, ax as usize) * a.at(m2, i, by as usize, bx as usize);
                            }
                        }
                    }
                    corr[((m1 * m + m2) * span + (dy + r) as usize) * span + (dx + r) as usize] = s;
                }
            }
        }
    }
    // Unknown (m, by, bx); G[(m1, b1), (m2, b2)] = corr[m1][m2][b1 - b2].
    let unknown = |mm: usize, by: usize, bx: usize| (mm * q + by) * q + bx;
    let mut g = Mat::zeros(n, n);
    for m1 in 0..m {
        for b1y in 0..q {
            for b1x in 0..q {
                for m2 in 0..m {
                    for b2y in 0..q {
                        for b2x in 0..q {
                            let dy = b1y as isize - b2y as isize + r;
                            let dx = b1x as isize - b2x as isize + r;
                            let v = corr[((m1 * m + m2) * span + dy as usize) * span + dx as usize];
                            g.data[unknown(m1, b1y, b1x) * n + unknown(m2, b2y, b2x)] = v;
                        }
                    }
                }
            }
        }
    }
    // rhs[(m, b), o] = sum_i sum_a A[m, i, a] * W[o, i, a + b]
    let outs = w.outs;
    let mut rhs = Mat::zeros(n, outs);
    for mm in 0..m {
        for by in 0..q {
            for bx in 0..q {
                let row = unknown(mm, by, bx);
                for o in 0..outs {
                    let mut s = 0.0;
                    for i in 0..a.ins {
                        for ay in 0..p {
                            for ax in 0..p {
                                s += a.at(mm, i, ay, ax) * w.at(o, i, ay + by, ax + bx);
                            }
                        }
                    }
                    rhs.data[row * outs + o] = s;
                }
            }
        }
    }
    let x = solve_spd(&g, &rhs);
    let mut b = Kernels::zeros(outs, m, q);
    for o in 0..outs {
        for mm in 0..m {
            for by in 0..q {
                for bx in 0..q {
                    b.data[((o * m + mm) * q + by) * q + bx] = x.at(unknown(mm, by, bx), o);
                }
            }
        }
    }
    b
}

/// Given the second factor `b` (out x mid, size q), the least-squares first factor (mid x in,
/// size K - q + 1). Convolution commutes, so this is [`solve_second`] on the transposed problem.
pub fn solve_first(b: &Kernels, w: &Kernels) -> Kernels {
    solve_second(&b.transposed(), &w.transposed()).transposed()
}

/// The result of a stacked factorisation.
pub struct Stacked {
    /// First conv: mid x in, size K - 2.
    pub first: Kernels,
    /// Second conv: out x mid, size 3.
    pub second: Kernels,
    /// Relative Frobenius error of the composite against the target.
    pub error: f64,
}

/// Finds `w ~= second o first` with `mid` channels by alternating least squares from a seeded
/// start. Stops when the error reaches `target`, stops improving, or after `max_iters`.
pub fn factorize(w: &Kernels, mid: usize, target: f64, max_iters: usize, seed: u64) -> Stacked {
    let p = w.size - 2;
    let mut state = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    };
    let mut first = Kernels::zeros(mid, w.ins, p);
    first.data.iter_mut().for_each(|v| *v = next());
    let norm = w.norm().max(1e-300);
    let mut best: Option<Stacked> = None;
    let mut last = f64::INFINITY;
    for it in 0..max_iters {
        let second = solve_second(&first, w);
        first = solve_first(&second, w);
        let approx = compose(&second, &first);
        let diff: f64 = approx.data.iter().zip(&w.data).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
        let error = diff / norm;
        if best.as_ref().is_none_or(|b| error < b.error) {
            best = Some(Stacked { first: first.clone(), second, error });
        }
        if error <= target {
            break;
        }
        // Every 10 sweeps, give up when the error no longer falls by 1%.
        if it % 10 == 9 {
            if error > 0.99 * last {
                break;
            }
            last = error;
        }
    }
    best.unwrap_or(Stacked { first, second: Kernels::zeros(w.outs, mid, 3), error: 1.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(outs: usize, ins: usize, size: usize, seed: u64) -> Kernels {
        let mut k = Kernels::zeros(outs, ins, size);
        let mut s = seed;
        for v in &mut k.data {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *v = ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0;
        }
        k
    }

    #[test]
    fn recovers_an_exact_stack() {
        let (a, b) = (random(3, 4, 3, 1), random(5, 3, 3, 2));
        let w = compose(&b, &a);
        let f = factorize(&w, 3, 1e-10, 2000, 7);
        assert!(f.error < 1e-8, "error {}", f.error);
    }

    #[test]
    fn half_steps_solve_exactly_when_the_other_factor_is_right() {
        let (a, b) = (random(2, 3, 3, 3), random(4, 2, 3, 4));
        let w = compose(&b, &a);
        let b2 = solve_second(&a, &w);
        let err: f64 = compose(&b2, &a).data.iter().zip(&w.data).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        assert!(err < 1e-9, "{err}");
        let a2 = solve_first(&b, &w);
        let err: f64 = compose(&b, &a2).data.iter().zip(&w.data).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        assert!(err < 1e-9, "{err}");
    }
}
