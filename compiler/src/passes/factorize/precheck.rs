//! A cheap proof that a conv's weights cannot factor, so that the SVDs and ALS run only on
//! weights that might. Real weights (random or trained) are never low rank, and on
//! Inception-v3 the full analysis of its three 5x5 convs took over a second for nothing.
//!
//! Each form is chosen only if its error at the largest rank that still saves MACs (the cut)
//! is within the tolerance, because the error falls and the MACs grow with the rank. So a form
//! is ruled out when no rank saves MACs, or when [`truncation_error_exceeds`] proves the error
//! at the cut above the tolerance, on the very matrices the SVDs would see. It never rules out a
//! form the full analysis would choose; when it cannot decide, the full analysis runs, so the
//! rewrites are exactly the same with or without it.

use std::slice::from_ref;

use super::{Candidate, POLYNOMIAL_POINTS};
use crate::linalg::truncation_error_exceeds;

/// The forms the pre-check proved cannot be chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RuledOut {
    pub separable: bool,
    pub depthwise: bool,
    pub stacked: bool,
}

impl RuledOut {
    pub const NOTHING: RuledOut = RuledOut { separable: false, depthwise: false, stacked: false };

    pub fn everything(&self) -> bool {
        self.separable && self.depthwise && self.stacked
    }
}

/// What can be ruled out for `c` (`before` MACs) at weight tolerance `tol`, with the stacked
/// form's polynomial rank taken at `rank_tol` (as `stacked_plan` does).
pub(super) fn rule_out(c: &Candidate, tol: f64, rank_tol: f64, before: u64) -> RuledOut {
    RuledOut {
        separable: separable(c, tol, before),
        depthwise: depthwise(c, tol, before),
        stacked: stacked(c, rank_tol, before),
    }
}

fn separable(c: &Candidate, tol: f64, before: u64) -> bool {
    let full = (c.cin * c.k).min(c.cout * c.k);
    match (1..=full).rev().find(|&r| c.separable_macs(r) < before) {
        None => true,
        Some(cut) => truncation_error_exceeds(from_ref(&c.separable_matrix()), cut, tol),
    }
}

fn depthwise(c: &Candidate, tol: f64, before: u64) -> bool {
    let full = c.cout.min(c.k * c.k);
    match (1..=full).rev().find(|&dm| c.depthwise_macs(dm) < before) {
        None => true,
        Some(cut) => {
            let parts: Vec<_> = (0..c.cin).map(|i| c.depthwise_matrix(i)).collect();
            truncation_error_exceeds(&parts, cut, tol)
        }
    }
}

/// The stacked form is built with the polynomial rank (the largest over the points) as its mid
/// channels and declined at full rank or without a MAC saving, so one point whose rank provably
/// exceeds the cut rules it out.
fn stacked(c: &Candidate, rank_tol: f64, before: u64) -> bool {
    if c.k < 5 || c.k.is_multiple_of(2) {
        return true;
    }
    let full = c.cin.min(c.cout);
    match (1..full).rev().find(|&mid| c.stacked_macs(mid) < before) {
        None => true,
        Some(cut) => POLYNOMIAL_POINTS
            .iter()
            .any(|&z| truncation_error_exceeds(from_ref(&c.polynomial_matrix(z)), cut, rank_tol)),
    }
}

#[cfg(test)]
mod tests {
    use incept_ir::attrs::{AttrValue, Attrs};
    use incept_ir::text::parse::SplitMix;
    use incept_ir::{DType, Graph, NodeId, Op, Tensor, TensorType, ValueId};

    use super::super::{Depthwise, EXACT_TOLERANCE, Separable, candidate, choose, stacked_plan};
    use super::*;

    fn conv(w: &[f64], [cout, cin, k]: [usize; 3], hw: usize) -> (Graph, NodeId) {
        let mut g = Graph::new("conv");
        let x = g.add_input("x", TensorType::known(DType::F32, &[1, cin, hw, hw])).expect("input");
        let wt = Tensor::from_vec(vec![cout, cin, k, k], w.iter().map(|&v| v as f32).collect::<Vec<f32>>());
        let w = g.add_const("w", wt).expect("w");
        let p = (k / 2) as i64;
        let attrs = Attrs::new(vec![("pads".into(), AttrValue::Ints(vec![p; 4]))]);
        let op = Op::from_attrs("Conv", attrs).expect("conv");
        let id = g.add_node("conv", op, vec![Some(x), Some(w)], vec!["y".into()]).expect("node");
        g.set_outputs(vec![ValueId::new(id, 0)]);
        incept_ir::verify::verify(&g).expect("verify");
        (g, id)
    }

    fn rand(rng: &mut SplitMix, n: usize) -> Vec<f64> {
        (0..n).map(|_| rng.uniform() - 0.5).collect()
    }

    /// Exactly low-rank weights of each form (rank `r`), or random ones (form 3).
    fn structured(form: usize, [cout, cin, k]: [usize; 3], r: usize, rng: &mut SplitMix) -> Vec<f64> {
        let idx = |o: usize, i: usize, y: usize, x: usize| ((o * cin + i) * k + y) * k + x;
        let mut w = vec![0.0; cout * cin * k * k];
        match form {
            // Separable: sum_r V[r, i, y] H[o, r, x].
            0 => {
                let (v, h) = (rand(rng, r * cin * k), rand(rng, cout * r * k));
                for o in 0..cout {
                    for i in 0..cin {
                        for y in 0..k {
                            for x in 0..k {
                                w[idx(o, i, y, x)] =
                                    (0..r).map(|q| v[(q * cin + i) * k + y] * h[(o * r + q) * k + x]).sum();
                            }
                        }
                    }
                }
            }
            // Depthwise with multiplier r: sum_q D[i, q, y, x] P[o, i, q].
            1 => {
                let (d, p) = (rand(rng, cin * r * k * k), rand(rng, cout * cin * r));
                for o in 0..cout {
                    for i in 0..cin {
                        for j in 0..k * k {
                            w[idx(o, i, j / k, j % k)] =
                                (0..r).map(|q| d[(i * r + q) * k * k + j] * p[(o * cin + i) * r + q]).sum();
                        }
                    }
                }
            }
            // Stacked: a (k-2)x(k-2) conv to r channels, then a 3x3 conv (kernels convolve).
            2 => {
                let p = k - 2;
                let (a, b) = (rand(rng, r * cin * p * p), rand(rng, cout * r * 9));
                for o in 0..cout {
                    for i in 0..cin {
                        for m in 0..r {
                            for (ya, xa) in (0..p * p).map(|t| (t / p, t % p)) {
                                for (yb, xb) in (0..9).map(|t| (t / 3, t % 3)) {
                                    w[idx(o, i, ya + yb, xa + xb)] +=
                                        a[((m * cin + i) * p + ya) * p + xa] * b[((o * r + m) * 3 + yb) * 3 + xb];
                                }
                            }
                        }
                    }
                }
            }
            _ => w = rand(rng, w.len()),
        }
        w
    }

    /// The pre-check never rules out a form the full analysis would choose, on weights of every
    /// form and rank with noise that puts the error at multiples of the tolerance around 1, and
    /// it rules out every form on random weights (where it pays).
    #[test]
    fn never_rules_out_a_form_that_would_be_chosen() {
        let mut rng = SplitMix(7);
        let (mut ruled, mut chosen) = (0, 0);
        for dims @ [cout, cin, k] in [[8, 6, 5], [12, 12, 5], [16, 8, 7]] {
            for form in 0..4 {
                for r in [1, 2, 4] {
                    let clean = structured(form, dims, r, &mut rng);
                    let norm = clean.iter().map(|v| v * v).sum::<f64>().sqrt().max(1.0);
                    let noise = rand(&mut rng, clean.len());
                    let nn = noise.iter().map(|v| v * v).sum::<f64>().sqrt();
                    for f in [0.0, 0.5, 0.9, 1.1, 2.0, 10.0, 1e3] {
                        let s = f * EXACT_TOLERANCE * norm / nn;
                        let w: Vec<f64> = clean.iter().zip(&noise).map(|(c, e)| c + s * e).collect();
                        let (g, id) = conv(&w, [cout, cin, k], 12);
                        let c = candidate(&g, id).expect("candidate");
                        let before = c.macs();
                        let skip = rule_out(&c, EXACT_TOLERANCE, 1e-5, before);
                        let sep = choose(&Separable::new(&c), EXACT_TOLERANCE, before).is_ok();
                        let dw = choose(&Depthwise::new(&c), EXACT_TOLERANCE, before).is_ok();
                        let st = stacked_plan(&c, EXACT_TOLERANCE, true)
                            .is_some_and(|p| p.error <= EXACT_TOLERANCE && p.macs < before);
                        let what = format!("{dims:?} form {form} rank {r} noise {f}: {skip:?}, chosen {sep} {dw} {st}");
                        assert!(!(skip.separable && sep || skip.depthwise && dw || skip.stacked && st), "{what}");
                        if form == 3 {
                            assert!(skip.everything(), "{what}");
                        }
                        ruled += usize::from(skip.separable) + usize::from(skip.depthwise) + usize::from(skip.stacked);
                        chosen += usize::from(sep) + usize::from(dw) + usize::from(st);
                    }
                }
            }
        }
        // Both sides of the question came up often.
        assert!(ruled > 100 && chosen > 20, "ruled out {ruled}, chosen {chosen}");
    }
}
