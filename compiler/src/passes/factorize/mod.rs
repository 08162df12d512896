//! Factorising large square convolutions into cheaper ones (the mission's "rewrite 5x5 into
//! stacked 3x3 or separable forms"). For a KxK conv with constant weights, three forms:
//!
//! 1. spatially separable: a Kx1 conv (C_in -> R) then a 1xK conv (R -> C_out); exact when the
//!    matrix `W[(i, ky), (o, kx)]` has rank R (found by SVD);
//! 2. depthwise separable: a KxK depthwise conv (C_in -> C_in * D) then a 1x1 conv (-> C_out);
//!    exact when every `W[:, i, :, :]` (C_out x K^2) has rank <= D;
//! 3. stacked: a (K-2)x(K-2) conv (C_in -> M, the original padding, stride 1) then a 3x3 conv
//!    (M -> C_out, the original stride, no padding); for K = 5 Inception-v3's two 3x3 convs. The
//!    composite of the two, computed on the same zero-padded input, is exactly the KxK conv, borders
//!    included. Found by alternating least squares; a 7x7 becomes 5x5 + 3x3, and the 5x5 can
//!    factor again.
//!
//! `factorize` (exact, in -O1) rewrites only when the factors reproduce the weights within
//! float rounding (relative Frobenius error <= 1e-6) and the rewrite cuts MACs.
//! `factorize-approx` (opt-in, `--factorize-tolerance T`) takes the cheapest form whose weight
//! error is <= T and records every candidate in the factorisation report.

mod precheck;
pub mod stacked;

use std::collections::HashSet;
use std::sync::Mutex;

use incept_ir::graph::{Graph, NodeId, ValueId};
use incept_ir::ops::conv::{AutoPad, Window};
use incept_ir::ops::{Conv, Op};
use incept_ir::{DType, OpError};

use crate::linalg::{Mat, svd};
use crate::passes::util::float_tensor;
use crate::passes::{Exactness, Pass, PassContext, Patch};
use stacked::Kernels;

/// Weight error under which a factorisation counts as exact (f32 rounding is ~6e-8).
pub const EXACT_TOLERANCE: f64 = 1e-6;

/// The tolerance of the polynomial rank that sizes the stacked form in exact mode: looser than
/// [`EXACT_TOLERANCE`] because ALS then has to reach that anyway.
const STACKED_RANK_TOLERANCE: f64 = 1e-5;

/// The points at which the polynomial rank evaluates `W(z)`.
const POLYNOMIAL_POINTS: [(f64, f64); 3] = [(0.7, 1.3), (1.2, 0.8), (0.9, 1.1)];

/// One conv the factorisation passes looked at.
#[derive(Clone, Debug)]
pub struct FactorizeRecord {
    pub node: String,
    /// `separable`, `depthwise` or `stacked`; the best form found even when not applied.
    pub form: &'static str,
    /// R, D or M.
    pub rank: usize,
    pub macs_before: u64,
    pub macs_after: u64,
    /// Relative Frobenius error of the factored weights.
    pub weight_error: f64,
    pub applied: bool,
    pub approximate: bool,
    /// Why it was not applied.
    pub note: String,
}

/// What the factorisation passes share across a pipeline run.
#[derive(Default)]
pub struct FactorizeState {
    pub records: Mutex<Vec<FactorizeRecord>>,
    /// Convs made by an approximate rewrite; they are not approximated again (errors would
    /// compound beyond the tolerance).
    made: Mutex<HashSet<String>>,
}

/// A candidate: a 2-D conv, group 1, square kernel K >= 5, unit dilations, constant float weights,
/// static shapes.
struct Candidate<'a> {
    conv: &'a Conv,
    x: ValueId,
    bias: Option<ValueId>,
    w: Vec<f64>,
    dtype: DType,
    cin: usize,
    cout: usize,
    k: usize,
    /// Input height and width, output height and width, batch.
    hw: [usize; 5],
}

impl Candidate<'_> {
    fn macs(&self) -> u64 {
        let [n, _, _, ho, wo] = self.hw;
        (n * ho * wo * self.cout * self.cin * self.k * self.k) as u64
    }

    fn at(&self, o: usize, i: usize, y: usize, x: usize) -> f64 {
        self.w[((o * self.cin + i) * self.k + y) * self.k + x]
    }

    /// `W[(i, ky), (o, kx)]`: rank R means a separable form with R channels between.
    fn separable_matrix(&self) -> Mat {
        let (k, cin, cout) = (self.k, self.cin, self.cout);
        Mat::from_fn(cin * k, cout * k, |r, col| self.at(col / k, r / k, r % k, col % k))
    }

    fn separable_macs(&self, r: usize) -> u64 {
        let [n, _, wi, ho, wo] = self.hw;
        (n * ho * wi * r * self.cin * self.k + n * ho * wo * self.cout * r * self.k) as u64
    }

    /// `W[:, i, :]` (C_out x K^2): its rank is the depth multiplier input channel `i` needs.
    fn depthwise_matrix(&self, i: usize) -> Mat {
        let k = self.k;
        Mat::from_fn(self.cout, k * k, |o, j| self.at(o, i, j / k, j % k))
    }

    fn depthwise_macs(&self, dm: usize) -> u64 {
        let [n, _, _, ho, wo] = self.hw;
        (n * ho * wo * (self.cin * dm * self.k * self.k + self.cin * dm * self.cout)) as u64
    }

    /// `W(z) = sum_k W[:, :, k] z^k` (C_out x C_in) at `z = (z1, z2)`.
    fn polynomial_matrix(&self, (z1, z2): (f64, f64)) -> Mat {
        Mat::from_fn(self.cout, self.cin, |o, i| {
            let mut s = 0.0;
            for y in 0..self.k {
                for x in 0..self.k {
                    s += self.at(o, i, y, x) * f64::powi(z1, y as i32) * f64::powi(z2, x as i32);
                }
            }
            s
        })
    }

    /// MACs of the stacked form with `mid` channels between.
    fn stacked_macs(&self, mid: usize) -> u64 {
        let [n, hi, wi, ho, wo] = self.hw;
        let w = &self.conv.window;
        let (h1, w1) = (hi + w.pads[0] + w.pads[2] + 3 - self.k, wi + w.pads[1] + w.pads[3] + 3 - self.k);
        let p = self.k - 2;
        (n * h1 * w1 * mid * self.cin * p * p + n * ho * wo * self.cout * mid * 9) as u64
    }
}

/// The largest kernel side the factorisation considers.
const MAX_KERNEL: usize = 11;

fn candidate<'a>(g: &'a Graph, id: NodeId) -> Option<Candidate<'a>> {
    let node = g.node(id);
    let Op::Conv(conv) = &node.op else { return None };
    let x = node.inputs().first().copied().flatten()?;
    let wv = node.inputs().get(1).copied().flatten()?;
    let wt = g.const_value(wv)?;
    let ws = wt.shape();
    let k = *ws.get(2)?;
    if conv.group != 1 || ws.len() != 4 || ws[3] != k || k < 5 || conv.window.dilations.iter().any(|&d| d != 1) {
        return None;
    }
    // Kernels beyond 11x11 are patch embeddings (ViT's 16x16 and 32x32, stride = kernel): they
    // do not factor, and proving it took 1.7 s of ViT-B/32's 2.9 s compile.
    if k > MAX_KERNEL {
        return None;
    }
    if !matches!(wt.dtype(), DType::F32 | DType::F64) {
        return None;
    }
    let xd = g.ty(x).static_dims()?;
    let od = g.ty(ValueId::new(id, 0)).static_dims()?;
    Some(Candidate {
        conv,
        x,
        bias: node.inputs().get(2).copied().flatten(),
        w: wt.to_f64s().ok()?,
        dtype: wt.dtype(),
        cin: ws[1],
        cout: ws[0],
        k,
        hw: [xd[0], xd[2], xd[3], od[2], od[3]],
    })
}

/// A factorisation ready to become a patch.
struct Plan {
    form: &'static str,
    rank: usize,
    macs: u64,
    error: f64,
    /// (weights shape, values, window) of the first and second conv; the bias goes on the second.
    first: (Vec<usize>, Vec<f64>, Window, usize),
    second: (Vec<usize>, Vec<f64>, Window),
}

fn window(kernel: [usize; 2], strides: [usize; 2], pads: [usize; 4]) -> Window {
    Window {
        kernel: kernel.to_vec(),
        strides: strides.to_vec(),
        pads: pads.to_vec(),
        dilations: vec![1, 1],
        auto_pad: AutoPad::NotSet,
    }
}

/// A form analysed at every rank: its weight error and MACs per rank, and how to build it.
trait Form {
    fn name(&self) -> &'static str;
    /// Largest meaningful rank.
    fn max_rank(&self) -> usize;
    fn error(&self, rank: usize) -> f64;
    fn macs(&self, rank: usize) -> u64;
    fn build(&self, rank: usize) -> Plan;
}

/// The rank a form would use: the smallest within `tol` if that saves MACs. Otherwise `Err` with
/// the largest MAC-saving rank and its error (for the report), if any rank saves MACs.
fn choose(f: &dyn Form, tol: f64, before: u64) -> Result<usize, Option<(usize, f64)>> {
    let rank = (1..=f.max_rank()).find(|&r| f.error(r) <= tol).unwrap_or(f.max_rank());
    if f.error(rank) <= tol && f.macs(rank) < before {
        return Ok(rank);
    }
    Err((1..=f.max_rank()).rev().find(|&r| f.macs(r) < before).map(|r| (r, f.error(r))))
}

/// Spatially separable: SVD of `W[(i, ky), (o, kx)]`.
struct Separable<'a> {
    c: &'a Candidate<'a>,
    d: crate::linalg::Svd,
}

impl<'a> Separable<'a> {
    fn new(c: &'a Candidate<'a>) -> Separable<'a> {
        Separable { c, d: svd(&c.separable_matrix()) }
    }
}

impl Form for Separable<'_> {
    fn name(&self) -> &'static str {
        "separable"
    }
    fn max_rank(&self) -> usize {
        self.d.s.len()
    }
    fn error(&self, r: usize) -> f64 {
        self.d.truncation_error(r)
    }
    fn macs(&self, r: usize) -> u64 {
        self.c.separable_macs(r)
    }
    fn build(&self, r: usize) -> Plan {
        let (c, d) = (self.c, &self.d);
        let (k, cin, cout) = (c.k, c.cin, c.cout);
        let (p, s) = (&c.conv.window.pads, &c.conv.window.strides);
        let mut v = vec![0.0; r * cin * k];
        let mut h = vec![0.0; cout * r * k];
        for rr in 0..r {
            let sq = d.s[rr].sqrt();
            for row in 0..cin * k {
                v[rr * cin * k + row] = d.u.at(row, rr) * sq;
            }
            for col in 0..cout * k {
                h[(col / k * r + rr) * k + col % k] = d.vt.at(rr, col) * sq;
            }
        }
        Plan {
            form: self.name(),
            rank: r,
            macs: self.macs(r),
            error: self.error(r),
            first: (vec![r, cin, k, 1], v, window([k, 1], [s[0], 1], [p[0], 0, p[2], 0]), 1),
            second: (vec![cout, r, 1, k], h, window([1, k], [1, s[1]], [0, p[1], 0, p[3]])),
        }
    }
}

/// Depthwise separable: an SVD of `W[:, i, :]` (C_out x K^2) per input channel.
struct Depthwise<'a> {
    c: &'a Candidate<'a>,
    decomps: Vec<crate::linalg::Svd>,
    total: f64,
}

impl<'a> Depthwise<'a> {
    fn new(c: &'a Candidate<'a>) -> Depthwise<'a> {
        let decomps = (0..c.cin).map(|i| svd(&c.depthwise_matrix(i))).collect();
        Depthwise { c, decomps, total: c.w.iter().map(|v| v * v).sum::<f64>().max(1e-300) }
    }
}

impl Form for Depthwise<'_> {
    fn name(&self) -> &'static str {
        "depthwise"
    }
    fn max_rank(&self) -> usize {
        self.c.cout.min(self.c.k * self.c.k)
    }
    fn error(&self, dm: usize) -> f64 {
        let rest: f64 = self.decomps.iter().map(|d| d.s.iter().skip(dm).map(|v| v * v).sum::<f64>()).sum();
        (rest.max(0.0) / self.total).sqrt()
    }
    fn macs(&self, dm: usize) -> u64 {
        self.c.depthwise_macs(dm)
    }
    fn build(&self, dm: usize) -> Plan {
        let c = self.c;
        let (k, cin, cout) = (c.k, c.cin, c.cout);
        let mut dw = vec![0.0; cin * dm * k * k];
        let mut pw = vec![0.0; cout * cin * dm];
        for (i, d) in self.decomps.iter().enumerate() {
            for dd in 0..dm.min(d.s.len()) {
                let sq = d.s[dd].sqrt();
                for j in 0..k * k {
                    dw[(i * dm + dd) * k * k + j] = d.vt.at(dd, j) * sq;
                }
                for o in 0..cout {
                    pw[o * cin * dm + i * dm + dd] = d.u.at(o, dd) * sq;
                }
            }
        }
        let w = &c.conv.window;
        Plan {
            form: self.name(),
            rank: dm,
            macs: self.macs(dm),
            error: self.error(dm),
            first: (
                vec![cin * dm, 1, k, k],
                dw,
                window([k, k], [w.strides[0], w.strides[1]], [w.pads[0], w.pads[1], w.pads[2], w.pads[3]]),
                cin,
            ),
            second: (vec![cout, cin * dm, 1, 1], pw, window([1, 1], [1, 1], [0; 4])),
        }
    }
}

/// Numerical rank of `W(z) = sum_k W[:, :, k] z^k` at a few points: a lower bound on the mid
/// channels of any stacked factorisation (and its exact value for generic factors).
fn polynomial_rank(c: &Candidate, tol: f64) -> usize {
    POLYNOMIAL_POINTS.iter().map(|&z| svd(&c.polynomial_matrix(z)).rank_for(tol)).max().unwrap_or(0)
}

fn stacked_rank_tolerance(tol: f64, exact: bool) -> f64 {
    if exact { STACKED_RANK_TOLERANCE } else { tol }
}

fn stacked_plan(c: &Candidate, tol: f64, exact: bool) -> Option<Plan> {
    if c.k < 5 || c.k.is_multiple_of(2) {
        return None;
    }
    let full = c.cin.min(c.cout);
    let mid = polynomial_rank(c, stacked_rank_tolerance(tol, exact)).max(1);
    // With full rank there is no low-rank structure to find; ALS would only burn time.
    if mid >= full {
        return None;
    }
    let w = &c.conv.window;
    let p = c.k - 2;
    let macs = c.stacked_macs(mid);
    if macs >= c.macs() {
        return None;
    }
    let target = Kernels { outs: c.cout, ins: c.cin, size: c.k, data: c.w.clone() };
    let f = stacked::factorize(&target, mid, if exact { tol / 4.0 } else { tol }, if exact { 600 } else { 200 }, 1);
    Some(Plan {
        form: "stacked",
        rank: mid,
        macs,
        error: f.error,
        first: (
            vec![mid, c.cin, p, p],
            f.first.data,
            window([p, p], [1, 1], [w.pads[0], w.pads[1], w.pads[2], w.pads[3]]),
            1,
        ),
        second: (vec![c.cout, mid, 3, 3], f.second.data, window([3, 3], [w.strides[0], w.strides[1]], [0; 4])),
    })
}

/// `precheck` lets [`precheck::rule_out`] skip the forms it proves cannot be chosen; it must stay
/// off in approximate mode, whose report gives the error of each form that missed.
fn rewrite(
    g: &Graph,
    id: NodeId,
    tol: f64,
    approximate: bool,
    precheck: bool,
    state: &FactorizeState,
) -> Result<Option<Patch>, OpError> {
    let Some(c) = candidate(g, id) else { return Ok(None) };
    let name = g.node(id).name.clone();
    if approximate && state.made.lock().map(|m| m.contains(&name)).unwrap_or(false) {
        return Ok(None);
    }
    let before = c.macs();
    let skip = if precheck {
        precheck::rule_out(&c, tol, stacked_rank_tolerance(tol, !approximate), before)
    } else {
        precheck::RuledOut::NOTHING
    };
    if skip.everything() {
        return Ok(None);
    }
    let record =
        |form: &'static str, rank: usize, macs_after: u64, error: f64, applied: bool, note: &str| FactorizeRecord {
            node: name.clone(),
            form,
            rank,
            macs_before: before,
            macs_after,
            weight_error: error,
            applied,
            approximate,
            note: note.to_string(),
        };
    let sep = (!skip.separable).then(|| Separable::new(&c));
    let dw = (!skip.depthwise).then(|| Depthwise::new(&c));
    let mut plans: Vec<Plan> = vec![];
    // For the report: the most accurate MAC-saving rank of each form that missed the tolerance.
    let mut misses: Vec<(&'static str, usize, f64)> = vec![];
    for f in [sep.as_ref().map(|f| f as &dyn Form), dw.as_ref().map(|f| f as &dyn Form)].into_iter().flatten() {
        match choose(f, tol, before) {
            Ok(r) => plans.push(f.build(r)),
            Err(Some((r, e))) => misses.push((f.name(), r, e)),
            Err(None) => {}
        }
    }
    match if skip.stacked { None } else { stacked_plan(&c, tol, !approximate) } {
        Some(p) if p.error <= tol && p.macs < before => plans.push(p),
        Some(p) if p.macs < before => misses.push((p.form, p.rank, p.error)),
        _ => {}
    }
    let Some(plan) = plans.into_iter().min_by_key(|p| p.macs) else {
        if approximate && let Ok(mut r) = state.records.lock() {
            match misses.iter().min_by(|a, b| a.2.total_cmp(&b.2)) {
                Some(&(form, rank, e)) => r.push(record(
                    form,
                    rank,
                    before,
                    e,
                    false,
                    &format!("the best MAC-saving rank has error {e:.3e} > {tol:e}"),
                )),
                None => r.push(record("-", 0, before, 0.0, false, "no form saves MACs")),
            }
        }
        return Ok(None);
    };
    let mut patch = Patch::new();
    let (s1, v1, win1, group1) = &plan.first;
    let (s2, v2, win2) = &plan.second;
    let w1 = patch.add_const(&format!("{name}/{}_w1", plan.form), float_tensor(c.dtype, s1.clone(), v1.clone()));
    let w2 = patch.add_const(&format!("{name}/{}_w2", plan.form), float_tensor(c.dtype, s2.clone(), v2.clone()));
    let (n1, n2) = (format!("{name}/{}1", plan.form), format!("{name}/{}2", plan.form));
    let mid = patch.add(&n1, Op::Conv(Conv { window: win1.clone(), group: *group1 }), vec![c.x.into(), w1]);
    let mut inputs = vec![mid, w2];
    inputs.extend(c.bias.map(crate::passes::PatchValue::from));
    let y = patch.add(&n2, Op::Conv(Conv { window: win2.clone(), group: 1 }), inputs);
    patch.replace(ValueId::new(id, 0), y);
    if let Ok(mut r) = state.records.lock() {
        r.push(record(plan.form, plan.rank, plan.macs, plan.error, true, ""));
    }
    if approximate && let Ok(mut m) = state.made.lock() {
        m.insert(n1);
        m.insert(n2);
    }
    Ok(Some(patch))
}

/// Exact factorisation (-O1).
pub struct Factorize;

impl Pass for Factorize {
    fn name(&self) -> &'static str {
        "factorize"
    }
    fn description(&self) -> &'static str {
        "split KxK convs whose weights factor exactly into separable, depthwise-separable or stacked 3x3 forms"
    }
    fn rewrite(&self, g: &Graph, id: NodeId, cx: &PassContext) -> Result<Option<Patch>, OpError> {
        rewrite(g, id, EXACT_TOLERANCE, false, true, &cx.factorize)
    }
}

/// Approximate factorisation within `--factorize-tolerance` (opt-in).
pub struct FactorizeApprox;

impl Pass for FactorizeApprox {
    fn name(&self) -> &'static str {
        "factorize-approx"
    }
    fn description(&self) -> &'static str {
        "like factorize, allowing a relative weight error up to --factorize-tolerance (approximate, opt-in)"
    }
    fn exactness(&self) -> Exactness {
        Exactness::Approximate
    }
    fn rewrite(&self, g: &Graph, id: NodeId, cx: &PassContext) -> Result<Option<Patch>, OpError> {
        match cx.options.factorize_tolerance {
            // No pre-check: the report needs every form's error even when none applies.
            Some(t) => rewrite(g, id, t, true, false, &cx.factorize),
            None => Ok(None),
        }
    }
}

/// The largest output difference, relative to the largest reference output magnitude, between two
/// graphs with the same inputs, on seeded uniform [-1, 1) inputs (the measured error of an
/// approximate rewrite on the whole model).
pub fn output_error(reference: &Graph, changed: &Graph, seed: u64) -> Result<f64, incept_ir::Error> {
    let mut rng = incept_ir::text::parse::SplitMix(seed);
    let mut inputs = vec![];
    for v in reference.input_values() {
        let ty = reference.ty(v);
        let dims = ty.static_dims().ok_or_else(|| incept_ir::Error::Input {
            name: reference.value(v).name.clone(),
            msg: "has symbolic dims; bind them (ImportOptions::dims or input_shapes) to measure the output error"
                .into(),
        })?;
        let n: usize = dims.iter().product();
        inputs.push(float_tensor(ty.dtype, dims, (0..n).map(|_| rng.uniform()).collect()));
    }
    let a = incept_ir::interp::run(reference, &inputs)?;
    let b = incept_ir::interp::run(changed, &inputs)?;
    let mut worst = 0f64;
    for (x, y) in a.iter().zip(&b) {
        let (x, y) = (x.to_f64s().map_err(OpError::from), y.to_f64s().map_err(OpError::from));
        let (Ok(x), Ok(y)) = (x, y) else { continue };
        let scale = x.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-300);
        let d = x.iter().zip(&y).fold(0f64, |m, (p, q)| m.max((p - q).abs()));
        worst = worst.max(d / scale);
    }
    Ok(worst)
}

/// The factorisation report as IR comment lines.
pub fn report(records: &[FactorizeRecord], output_error: Option<f64>) -> String {
    let mut s = String::from("; factorisation\n");
    s.push_str(&format!(
        "; {:<48} {:<10} {:>5} {:>12} {:>12} {:>12} {}\n",
        "conv", "form", "rank", "MACs before", "MACs after", "weight err", "status"
    ));
    for r in records {
        let status = if r.applied {
            if r.approximate { "applied (approximate)".to_string() } else { "applied (exact)".to_string() }
        } else {
            format!("not applied: {}", r.note)
        };
        s.push_str(&format!(
            "; {:<48} {:<10} {:>5} {:>12} {:>12} {:>12.3e} {status}\n",
            crate::table::shorten(&r.node, crate::table::NAME_WIDTH),
            r.form,
            r.rank,
            r.macs_before,
            r.macs_after,
            r.weight_error
        ));
    }
    let (before, after): (u64, u64) =
        records.iter().filter(|r| r.applied).fold((0, 0), |(a, b), r| (a + r.macs_before, b + r.macs_after));
    s.push_str(&format!("; rewritten convs: {} MACs -> {} MACs\n", before, after));
    if let Some(e) = output_error {
        s.push_str(&format!("; measured output error vs the unfactorised model (seeded random input): {e:.3e}\n"));
    }
    s
}
