//! Attention (opset 23): scaled dot-product attention over heads, with an optional mask, causal
//! masking, a key/value cache, grouped-query heads and a softcap. The reference follows the ONNX
//! operator's definition step by step in f64 (with the scale rounded to the input type, as the
//! definition does); the compiler rewrites it into MatMul, Softmax and friends.

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::ops::conv::from_f64;
use crate::ops::{InferCx, Op, OpDef, expect_float, input, opt_input};
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;

#[derive(Clone, Debug, PartialEq)]
pub struct Attention {
    pub is_causal: bool,
    /// Heads of Q and of K/V, for 3-D inputs (`[batch, seq, heads * head_size]`).
    pub q_num_heads: Option<usize>,
    pub kv_num_heads: Option<usize>,
    /// 0: Q K^T (after the softcap); 1: the same; 2: with the mask added; 3: after the softmax.
    pub qk_matmul_output_mode: i64,
    pub scale: Option<f32>,
    pub softcap: f32,
}

/// The 4-D geometry of one Attention node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub q_len: usize,
    pub past_len: usize,
    /// Keys after the cache: past + new.
    pub kv_len: usize,
    pub head: usize,
    pub v_head: usize,
    /// Whether Q, K, V (and Y) are 3-D.
    pub three_d: bool,
}

impl Attention {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let heads = |a: &mut Attrs, name: &str| -> Result<Option<usize>, OpError> {
            match a.int(name, 0)? {
                0 => Ok(None),
                n if n > 0 => Ok(Some(n as usize)),
                n => invalid!("{name} must be positive, found {n}"),
            }
        };
        let q_num_heads = heads(a, "q_num_heads")?;
        let kv_num_heads = heads(a, "kv_num_heads")?;
        let mode = a.int("qk_matmul_output_mode", 0)?;
        if !(0..=3).contains(&mode) {
            invalid!("qk_matmul_output_mode must be 0 to 3, found {mode}");
        }
        let scale = a.float("scale", f32::NAN)?;
        // The softmax precision changes nothing in a reference that computes in f64.
        a.ignore("softmax_precision");
        Ok(Op::Attention(Attention {
            is_causal: a.int("is_causal", 0)? != 0,
            q_num_heads,
            kv_num_heads,
            qk_matmul_output_mode: mode,
            scale: (!scale.is_nan()).then_some(scale),
            softcap: a.float("softcap", 0.0)?,
        }))
    }

    /// The geometry from the input shapes (Q, K, V and the optional past key).
    pub fn geometry(&self, q: &[usize], k: &[usize], v: &[usize], past: Option<&[usize]>) -> Result<Geometry, OpError> {
        if q.len() != k.len() || q.len() != v.len() || !(q.len() == 3 || q.len() == 4) {
            invalid!("Q, K and V must all be 3-D or all 4-D, found ranks {}, {}, {}", q.len(), k.len(), v.len());
        }
        let three_d = q.len() == 3;
        let (batch, q_heads, q_len, head, kv_heads, new_len, v_head) = if three_d {
            let (Some(hq), Some(hk)) = (self.q_num_heads, self.kv_num_heads) else {
                invalid!("3-D inputs need q_num_heads and kv_num_heads");
            };
            if !q[2].is_multiple_of(hq) || !k[2].is_multiple_of(hk) || !v[2].is_multiple_of(hk) {
                invalid!("hidden sizes {}, {}, {} do not split into {hq} and {hk} heads", q[2], k[2], v[2]);
            }
            (q[0], hq, q[1], q[2] / hq, hk, k[1], v[2] / hk)
        } else {
            if self.q_num_heads.is_some() || self.kv_num_heads.is_some() {
                invalid!("q_num_heads and kv_num_heads are for 3-D inputs only");
            }
            (q[0], q[1], q[2], q[3], k[1], k[2], v[3])
        };
        let (kb, vb) = (k[0], v[0]);
        let k_head = if three_d { k[2] / kv_heads } else { k[3] };
        let (v_heads, v_len) = if three_d { (kv_heads, v[1]) } else { (v[1], v[2]) };
        if kb != batch || vb != batch || k_head != head || v_heads != kv_heads || v_len != new_len {
            invalid!("Q {q:?}, K {k:?} and V {v:?} do not agree on batch, heads, head size or length");
        }
        if kv_heads == 0 || q_heads % kv_heads != 0 {
            invalid!("{q_heads} query heads are not a multiple of {kv_heads} key/value heads");
        }
        let past_len = match past {
            None => 0,
            Some(p) if p.len() == 4 && p[0] == batch && p[1] == kv_heads && p[3] == head => p[2],
            Some(p) => invalid!("past_key {p:?} must be [batch, kv heads, past length, head size]"),
        };
        Ok(Geometry { batch, q_heads, kv_heads, q_len, past_len, kv_len: past_len + new_len, head, v_head, three_d })
    }

    /// `sqrt(scale)`, rounded to the input type: Q and K are each multiplied by it.
    pub fn root_scale(&self, head: usize, dtype: DType) -> f64 {
        let s = self.scale.map_or(1.0 / (head as f64).sqrt(), |s| s as f64).sqrt();
        if dtype == DType::F32 { s as f32 as f64 } else { s }
    }
}

fn known(ty: &TensorType, what: &str) -> Result<Vec<usize>, OpError> {
    ty.static_dims().ok_or_else(|| OpError::DynamicShape(format!("{what} {ty} needs a static shape")))
}

/// `t` (rank 3 `[b, s, h * d]` or rank 4 `[b, h, s, d]`) as `[b, h, s, d]` values.
fn heads_first(t: &[f64], three_d: bool, b: usize, h: usize, s: usize, d: usize) -> Vec<f64> {
    if !three_d {
        return t.to_vec();
    }
    let mut out = vec![0f64; t.len()];
    for bi in 0..b {
        for si in 0..s {
            for hi in 0..h {
                for di in 0..d {
                    out[((bi * h + hi) * s + si) * d + di] = t[((bi * s + si) * h + hi) * d + di];
                }
            }
        }
    }
    out
}

impl OpDef for Attention {
    fn name(&self) -> &'static str {
        "Attention"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(3, 6)?;
        if cx.n_outputs > 4 {
            invalid!("has at most 4 outputs, found {}", cx.n_outputs);
        }
        let (q, k, v) = (cx.ty(0)?, cx.ty(1)?, cx.ty(2)?);
        expect_float(q, "Q")?;
        for (t, what) in [(k, "K"), (v, "V")] {
            if t.dtype != q.dtype {
                invalid!("{what} is {}, Q is {}", t.dtype, q.dtype);
            }
        }
        if cx.has(4) != cx.has(5) {
            invalid!("past_key and past_value must be given together");
        }
        let past = cx.opt_ty(4).map(|t| known(t, "past_key")).transpose()?;
        let g = self.geometry(&known(q, "Q")?, &known(k, "K")?, &known(v, "V")?, past.as_deref())?;
        if let Some(p) = cx.opt_ty(5) {
            let p = known(p, "past_value")?;
            if p != [g.batch, g.kv_heads, g.past_len, g.v_head] {
                invalid!("past_value {p:?} does not match past_key");
            }
        }
        if let Some(m) = cx.opt_ty(3) {
            if m.dtype != DType::Bool && m.dtype != q.dtype {
                invalid!("attn_mask must be bool or {}, found {}", q.dtype, m.dtype);
            }
            let ms = known(m, "attn_mask")?;
            let full = [g.batch, g.q_heads, g.q_len, g.kv_len];
            let ok = ms.len() >= 2
                && ms.len() <= 4
                && ms[ms.len() - 1] <= g.kv_len
                && ms.iter().rev().skip(1).zip(full.iter().rev().skip(1)).all(|(&a, &b)| a == 1 || a == b);
            if !ok {
                invalid!("attn_mask {ms:?} does not broadcast to {full:?}");
            }
        }
        let y = if g.three_d {
            vec![g.batch, g.q_len, g.q_heads * g.v_head]
        } else {
            vec![g.batch, g.q_heads, g.q_len, g.v_head]
        };
        let known = |d: Vec<usize>| TensorType::new(q.dtype, d.into_iter().map(Dim::Known).collect());
        let outs = [
            known(y),
            known(vec![g.batch, g.kv_heads, g.kv_len, g.head]),
            known(vec![g.batch, g.kv_heads, g.kv_len, g.v_head]),
            known(vec![g.batch, g.q_heads, g.q_len, g.kv_len]),
        ];
        Ok(outs[..cx.n_outputs.max(1)].to_vec())
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (q, k, v) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let (pk, pv) = (opt_input(inputs, 4), opt_input(inputs, 5));
        let g = self.geometry(q.shape(), k.shape(), v.shape(), pk.map(|t| t.shape()))?;
        let (b, hq, hk, ql, pl, kl, d, dv) =
            (g.batch, g.q_heads, g.kv_heads, g.q_len, g.past_len, g.kv_len, g.head, g.v_head);
        let nl = kl - pl;
        let qv = heads_first(&q.to_f64s()?, g.three_d, b, hq, ql, d);
        let kn = heads_first(&k.to_f64s()?, g.three_d, b, hk, nl, d);
        let vn = heads_first(&v.to_f64s()?, g.three_d, b, hk, nl, dv);
        // The cache: past then new along the sequence.
        let cat = |past: Option<&Tensor>, new: &[f64], w: usize| -> Result<Vec<f64>, OpError> {
            let p = past.map(|t| t.to_f64s()).transpose()?.unwrap_or_default();
            let mut out = Vec::with_capacity(b * hk * kl * w);
            for bh in 0..b * hk {
                out.extend_from_slice(&p[bh * pl * w..(bh + 1) * pl * w]);
                out.extend_from_slice(&new[bh * nl * w..(bh + 1) * nl * w]);
            }
            Ok(out)
        };
        let (keys, values) = (cat(pk, &kn, d)?, cat(pv, &vn, dv)?);
        // The additive bias over [b, hq, q, kv]: the mask (padded with "masked" up to kv_len),
        // plus the causal frontier j <= i + past.
        let mask = opt_input(inputs, 3);
        let mask_vals = mask.map(|m| m.to_f64s()).transpose()?;
        let bias = |bi: usize, hi: usize, i: usize, j: usize| -> f64 {
            let mut x = 0f64;
            if let (Some(m), Some(mv)) = (mask, &mask_vals) {
                let ms = m.shape();
                let r = ms.len();
                let w = ms[r - 1];
                if j >= w {
                    x = f64::NEG_INFINITY;
                } else {
                    let full = [bi, hi, i, j];
                    let mut off = 0;
                    for (a, &n) in ms.iter().enumerate() {
                        let idx = full[4 - r + a];
                        off = off * n + if n == 1 { 0 } else { idx };
                    }
                    let val = mv[off];
                    x = if m.dtype() == DType::Bool { if val != 0.0 { 0.0 } else { f64::NEG_INFINITY } } else { val };
                }
            }
            if self.is_causal && j > i + pl {
                x += f64::NEG_INFINITY;
            }
            x
        };
        let s = self.root_scale(d, q.dtype());
        let group = hq / hk;
        let mut y = vec![0f64; b * hq * ql * dv];
        let mut qk_out = vec![0f64; b * hq * ql * kl];
        let mut row = vec![0f64; kl];
        for bi in 0..b {
            for hi in 0..hq {
                let kh = hi / group;
                for i in 0..ql {
                    let qrow = &qv[((bi * hq + hi) * ql + i) * d..][..d];
                    let mut all_masked = true;
                    let mut mx = f64::NEG_INFINITY;
                    for (j, r) in row.iter_mut().enumerate() {
                        let krow = &keys[((bi * hk + kh) * kl + j) * d..][..d];
                        let mut dot: f64 = qrow.iter().zip(krow).map(|(a, c)| (a * s) * (c * s)).sum();
                        if self.softcap > 0.0 {
                            let c = self.softcap as f64;
                            dot = c * (dot / c).tanh();
                        }
                        let bj = bias(bi, hi, i, j);
                        all_masked &= bj == f64::NEG_INFINITY;
                        let o = &mut qk_out[((bi * hq + hi) * ql + i) * kl + j];
                        *o = if self.qk_matmul_output_mode == 2 { dot + bj } else { dot };
                        *r = dot + bj;
                        mx = mx.max(*r);
                    }
                    // Softmax; a row with every key masked is zero.
                    let m = if mx == f64::NEG_INFINITY { 0.0 } else { mx };
                    let mut sum = 0f64;
                    for r in row.iter_mut() {
                        *r = (*r - m).exp();
                        sum += *r;
                    }
                    let sum = if sum == 0.0 { 1.0 } else { sum };
                    for (j, r) in row.iter_mut().enumerate() {
                        *r = if all_masked { 0.0 } else { *r / sum };
                        if self.qk_matmul_output_mode == 3 {
                            qk_out[((bi * hq + hi) * ql + i) * kl + j] = *r;
                        }
                    }
                    let yrow = &mut y[((bi * hq + hi) * ql + i) * dv..][..dv];
                    for (j, &p) in row.iter().enumerate() {
                        let vrow = &values[((bi * hk + kh) * kl + j) * dv..][..dv];
                        for (o, &x) in yrow.iter_mut().zip(vrow) {
                            *o += p * x;
                        }
                    }
                }
            }
        }
        let dt = q.dtype();
        let y = if g.three_d {
            let mut t = vec![0f64; y.len()];
            for bi in 0..b {
                for hi in 0..hq {
                    for i in 0..ql {
                        for e in 0..dv {
                            t[((bi * ql + i) * hq + hi) * dv + e] = y[((bi * hq + hi) * ql + i) * dv + e];
                        }
                    }
                }
            }
            from_f64(dt, vec![b, ql, hq * dv], t)
        } else {
            from_f64(dt, vec![b, hq, ql, dv], y)
        };
        Ok(vec![
            y,
            from_f64(dt, vec![b, hk, kl, d], keys),
            from_f64(dt, vec![b, hk, kl, dv], values),
            from_f64(dt, vec![b, hq, ql, kl], qk_out),
        ])
    }

    fn attrs(&self) -> AttrList {
        let mut a = vec![];
        if self.is_causal {
            a.push(("is_causal", AttrValue::Int(1)));
        }
        if let Some(h) = self.q_num_heads {
            a.push(("q_num_heads", AttrValue::Int(h as i64)));
        }
        if let Some(h) = self.kv_num_heads {
            a.push(("kv_num_heads", AttrValue::Int(h as i64)));
        }
        if self.qk_matmul_output_mode != 0 {
            a.push(("qk_matmul_output_mode", AttrValue::Int(self.qk_matmul_output_mode)));
        }
        if let Some(s) = self.scale {
            a.push(("scale", AttrValue::Float(s)));
        }
        if self.softcap != 0.0 {
            a.push(("softcap", AttrValue::Float(self.softcap)));
        }
        a
    }

    fn macs(&self, inputs: &[Option<&TensorType>], _outputs: &[TensorType]) -> u64 {
        let dims = |i: usize| inputs.get(i).copied().flatten().and_then(|t| t.static_dims());
        let (Some(q), Some(k), Some(v)) = (dims(0), dims(1), dims(2)) else { return 0 };
        let Ok(g) = self.geometry(&q, &k, &v, dims(4).as_deref()) else { return 0 };
        // Q K^T, then P V.
        (g.batch * g.q_heads * g.q_len * g.kv_len * (g.head + g.v_head)) as u64
    }
}
