//! Composite ops rewritten into the ops the backend has kernels for. The JIT has no Einsum or
//! Attention kernel, so these passes also run before lowering at every -O level (see
//! `compile_graph`).

use incept_ir::OpError;
use incept_ir::graph::{Graph, NodeId, ValueId};
use incept_ir::ops::{Op, Reduce, ReduceKind, Reshape, Transpose};
use incept_ir::{Tensor, ops::MatMul};

use crate::passes::{Pass, PassContext, Patch, PatchValue};

/// Einsum with one input (a transpose and sums) or two (a batched MatMul between transposes and
/// reshapes), when no input repeats a label and there is no ellipsis.
pub struct DecomposeEinsum;

fn reduce_sum(p: &mut Patch, name: &str, x: PatchValue, axes: &[usize]) -> PatchValue {
    if axes.is_empty() {
        return x;
    }
    let a = p.add_const(
        &format!("{name}/axes"),
        Tensor::from_vec(vec![axes.len()], axes.iter().map(|&a| a as i64).collect()),
    );
    let op = Op::Reduce(Reduce { kind: ReduceKind::Sum, keepdims: false, noop_with_empty_axes: false });
    p.add(&format!("{name}/sum"), op, vec![x, a])
}

fn transpose(p: &mut Patch, name: &str, x: PatchValue, perm: &[usize]) -> PatchValue {
    if perm.iter().enumerate().all(|(i, &q)| i == q) {
        return x;
    }
    p.add(name, Op::Transpose(Transpose { perm: perm.to_vec() }), vec![x])
}

fn reshape(p: &mut Patch, name: &str, x: PatchValue, dims: &[usize]) -> PatchValue {
    let s = p.add_const(
        &format!("{name}/shape"),
        Tensor::from_vec(vec![dims.len()], dims.iter().map(|&d| d as i64).collect()),
    );
    p.add(name, Op::Reshape(Reshape { allowzero: false }), vec![x, s])
}

impl Pass for DecomposeEinsum {
    fn name(&self) -> &'static str {
        "decompose-einsum"
    }
    fn description(&self) -> &'static str {
        "rewrite Einsum into Transpose, ReduceSum, Reshape and a batched MatMul (needed by the JIT)"
    }
    fn rewrite(&self, g: &Graph, id: NodeId, _: &PassContext) -> Result<Option<Patch>, OpError> {
        let node = g.node(id);
        let Op::Einsum(e) = &node.op else { return Ok(None) };
        let ins: Vec<ValueId> = node.input_values().collect();
        let Some(shapes) = ins.iter().map(|&v| g.ty(v).static_dims()).collect::<Option<Vec<Vec<usize>>>>() else {
            return Ok(None);
        };
        let out = ValueId::new(id, 0);
        let name = &node.name;
        let mut p = Patch::new();
        match ins.len() {
            1 => {
                let ls = &e.labels[0];
                if ls.iter().enumerate().any(|(i, l)| ls[..i].contains(l)) {
                    return Ok(None);
                }
                let summed: Vec<usize> = (0..ls.len()).filter(|&i| !e.output.contains(&ls[i])).collect();
                let kept: Vec<_> = ls.iter().filter(|l| e.output.contains(l)).collect();
                let perm: Vec<usize> =
                    e.output.iter().map(|l| kept.iter().position(|k| *k == l).unwrap_or(0)).collect();
                let x = reduce_sum(&mut p, name, ins[0].into(), &summed);
                let mut y = transpose(&mut p, &format!("{name}/order"), x, &perm);
                if y == PatchValue::Old(ins[0]) {
                    // Nothing summed or moved (e.g. '->' on a scalar): a copy.
                    y = p.add(name, Op::Identity(incept_ir::ops::Identity), vec![y]);
                }
                p.replace(out, y);
            }
            2 => {
                let Some(plan) = e.matmul_plan() else { return Ok(None) };
                let mut kept = vec![];
                let mut v = vec![];
                for i in 0..2 {
                    let x = reduce_sum(&mut p, &format!("{name}/in{i}"), ins[i].into(), &plan.sum_first[i]);
                    let k: Vec<usize> =
                        (0..shapes[i].len()).filter(|j| !plan.sum_first[i].contains(j)).map(|j| shapes[i][j]).collect();
                    kept.push(k);
                    v.push(x);
                }
                let size = |s: &[usize], axes: &[usize]| axes.iter().map(|&a| s[a]).product::<usize>();
                let (b, m, k) = (size(&kept[0], &plan.batch), size(&kept[0], &plan.m), size(&kept[0], &plan.k));
                let n = size(&kept[1], &plan.n);
                let a = transpose(&mut p, &format!("{name}/a"), v[0], &plan.perm[0]);
                let a = reshape(&mut p, &format!("{name}/a3"), a, &[b, m, k]);
                let bt = transpose(&mut p, &format!("{name}/b"), v[1], &plan.perm[1]);
                let bt = reshape(&mut p, &format!("{name}/b3"), bt, &[b, k, n]);
                let y = p.add(&format!("{name}/matmul"), Op::MatMul(MatMul), vec![a, bt]);
                let dims: Vec<usize> = plan
                    .batch
                    .iter()
                    .chain(&plan.m)
                    .map(|&i| kept[0][i])
                    .chain(plan.n.iter().map(|&i| kept[1][i]))
                    .collect();
                let y = reshape(&mut p, &format!("{name}/split"), y, &dims);
                let y = transpose(&mut p, &format!("{name}/order"), y, &plan.out_perm);
                p.replace(out, y);
            }
            _ => return Ok(None),
        }
        p.remove(id);
        Ok(Some(p))
    }
}

/// Attention as the ONNX definition spells it: heads first (3-D inputs), the key/value cache
/// concatenated, grouped heads repeated, Q and K scaled by `sqrt(scale)`, `Q K^T`, the softcap,
/// the additive bias (mask and causal frontier), a softmax whose fully masked rows are zeroed,
/// and `P V`.
pub struct DecomposeAttention;

fn konst_f(p: &mut Patch, name: &str, dtype: incept_ir::DType, shape: Vec<usize>, v: Vec<f64>) -> PatchValue {
    let t = if dtype == incept_ir::DType::F64 {
        Tensor::from_vec(shape, v)
    } else {
        Tensor::from_vec(shape, v.into_iter().map(|x| x as f32).collect::<Vec<f32>>())
    };
    p.add_const(name, t)
}

fn binary(p: &mut Patch, name: &str, b: incept_ir::ops::Binary, x: PatchValue, y: PatchValue) -> PatchValue {
    p.add(name, Op::Binary(b), vec![x, y])
}

impl Pass for DecomposeAttention {
    fn name(&self) -> &'static str {
        "decompose-attention"
    }
    fn description(&self) -> &'static str {
        "rewrite Attention into Reshape, Transpose, MatMul, Softmax and the mask arithmetic (needed by the JIT)"
    }
    fn rewrite(&self, g: &Graph, id: NodeId, _: &PassContext) -> Result<Option<Patch>, OpError> {
        use incept_ir::ops::{Binary, Compare, Concat, Expand, Softmax, Unary, Where};
        let node = g.node(id);
        let Op::Attention(at) = &node.op else { return Ok(None) };
        let slot = |i: usize| node.inputs().get(i).copied().flatten();
        let (Some(q), Some(k), Some(v)) = (slot(0), slot(1), slot(2)) else { return Ok(None) };
        let dims = |v: ValueId| g.ty(v).static_dims();
        let (Some(qs), Some(ks), Some(vs)) = (dims(q), dims(k), dims(v)) else { return Ok(None) };
        let past = slot(4).and_then(dims);
        let geo = at.geometry(&qs, &ks, &vs, past.as_deref())?;
        let dtype = g.ty(q).dtype;
        let name = node.name.clone();
        let n = |s: &str| format!("{name}/{s}");
        let mut p = Patch::new();
        let (b, hq, hk, ql, kl, d, dv) =
            (geo.batch, geo.q_heads, geo.kv_heads, geo.q_len, geo.kv_len, geo.head, geo.v_head);
        let new_len = kl - geo.past_len;
        // [b, s, h * w] -> [b, h, s, w]
        let split = |p: &mut Patch, x: ValueId, h: usize, s: usize, w: usize, tag: &str| -> PatchValue {
            if !geo.three_d {
                return x.into();
            }
            let r = reshape(p, &n(&format!("{tag}_heads")), x.into(), &[b, s, h, w]);
            transpose(p, &n(&format!("{tag}_t")), r, &[0, 2, 1, 3])
        };
        let q4 = split(&mut p, q, hq, ql, d, "q");
        let k4 = split(&mut p, k, hk, new_len, d, "k");
        let v4 = split(&mut p, v, hk, new_len, dv, "v");
        let cache = |p: &mut Patch, past: Option<ValueId>, x: PatchValue, tag: &str| match past {
            Some(pv) => p.add(&n(tag), Op::Concat(Concat { axis: 2 }), vec![pv.into(), x]),
            None => x,
        };
        let kc = cache(&mut p, slot(4), k4, "present_key");
        let vc = cache(&mut p, slot(5), v4, "present_value");
        // Grouped-query heads: each K/V head serves `group` consecutive query heads.
        let group = hq / hk;
        let repeat = |p: &mut Patch, x: PatchValue, w: usize, tag: &str| -> PatchValue {
            if group == 1 {
                return x;
            }
            let r = reshape(p, &n(&format!("{tag}_g")), x, &[b, hk, 1, kl, w]);
            let shape = p.add_const(
                &n(&format!("{tag}_gshape")),
                Tensor::from_vec(vec![5], vec![b as i64, hk as i64, group as i64, kl as i64, w as i64]),
            );
            let e = p.add(&n(&format!("{tag}_repeat")), Op::Expand(Expand), vec![r, shape]);
            reshape(p, &n(&format!("{tag}_grouped")), e, &[b, hq, kl, w])
        };
        let kg = repeat(&mut p, kc, d, "k");
        let vg = repeat(&mut p, vc, dv, "v");
        let s = konst_f(&mut p, &n("root_scale"), dtype, vec![], vec![at.root_scale(d, dtype)]);
        let qsc = binary(&mut p, &n("q_scaled"), Binary::Mul, q4, s);
        let ksc = binary(&mut p, &n("k_scaled"), Binary::Mul, kg, s);
        let kt = transpose(&mut p, &n("k_t"), ksc, &[0, 1, 3, 2]);
        let mut qk = p.add(&n("qk"), Op::MatMul(MatMul), vec![qsc, kt]);
        if at.softcap > 0.0 {
            let c = konst_f(&mut p, &n("softcap"), dtype, vec![], vec![at.softcap as f64]);
            let x = binary(&mut p, &n("softcap_div"), Binary::Div, qk, c);
            let t = p.add(&n("softcap_tanh"), Op::Unary(Unary::Tanh), vec![x]);
            qk = binary(&mut p, &n("softcap_mul"), Binary::Mul, t, c);
        }
        // The additive bias: the mask (bool: 0 where true, -inf where false; padded with -inf up to
        // the key count), plus the causal frontier j <= i + past.
        let ninf = f64::NEG_INFINITY;
        let mut bias: Option<PatchValue> = None;
        if let Some(m) = slot(3) {
            let Some(ms) = dims(m) else { return Ok(None) };
            let mut mb: PatchValue = m.into();
            if g.ty(m).dtype == incept_ir::DType::Bool {
                let zero = konst_f(&mut p, &n("mask_zero"), dtype, vec![], vec![0.0]);
                let minf = konst_f(&mut p, &n("mask_ninf"), dtype, vec![], vec![ninf]);
                mb = p.add(&n("mask_bias"), Op::Where(Where), vec![mb, zero, minf]);
            }
            let w = ms[ms.len() - 1];
            if w < kl {
                let mut pad_shape = ms.clone();
                let last = pad_shape.len() - 1;
                pad_shape[last] = kl - w;
                let count = pad_shape.iter().product();
                let fill = konst_f(&mut p, &n("mask_pad"), dtype, pad_shape, vec![ninf; count]);
                mb = p.add(&n("mask_padded"), Op::Concat(Concat { axis: -1 }), vec![mb, fill]);
            }
            bias = Some(mb);
        }
        if at.is_causal {
            let vals: Vec<f64> =
                (0..ql * kl).map(|e| if e % kl > e / kl + geo.past_len { ninf } else { 0.0 }).collect();
            let c = konst_f(&mut p, &n("causal"), dtype, vec![ql, kl], vals);
            bias = Some(match bias {
                Some(m) => binary(&mut p, &n("bias"), Binary::Add, m, c),
                None => c,
            });
        }
        let scores = match bias {
            Some(bv) => binary(&mut p, &n("scores"), Binary::Add, qk, bv),
            None => qk,
        };
        let mut probs =
            p.add(&n("softmax"), Op::Softmax(Softmax { axis: -1, log: false, coerce_2d: false }), vec![scores]);
        // A row whose bias is -inf everywhere has no key to attend: zero, not NaN. The causal
        // frontier always leaves key 0, so only a mask can do that.
        if let (Some(bv), true) = (bias, slot(3).is_some()) {
            let axes = p.add_const(&n("row_axes"), Tensor::from_vec(vec![1], vec![-1i64]));
            let op = Op::Reduce(Reduce { kind: ReduceKind::Max, keepdims: true, noop_with_empty_axes: false });
            let mx = p.add(&n("row_max"), op, vec![bv, axes]);
            let minf = konst_f(&mut p, &n("row_ninf"), dtype, vec![], vec![ninf]);
            let masked = p.add(&n("row_masked"), Op::Compare(Compare::Equal), vec![mx, minf]);
            let zero = konst_f(&mut p, &n("row_zero"), dtype, vec![], vec![0.0]);
            probs = p.add(&n("guarded"), Op::Where(Where), vec![masked, zero, probs]);
        }
        let y4 = p.add(&n("pv"), Op::MatMul(MatMul), vec![probs, vg]);
        let y = if geo.three_d {
            let t = transpose(&mut p, &n("y_t"), y4, &[0, 2, 1, 3]);
            reshape(&mut p, &n("y"), t, &[b, ql, hq * dv])
        } else {
            y4
        };
        let qk_out = match at.qk_matmul_output_mode {
            2 => scores,
            3 => probs,
            _ => qk,
        };
        for (slot, value) in [y, kc, vc, qk_out].into_iter().enumerate() {
            if slot < node.outputs.len() {
                p.replace(ValueId::new(id, slot), value);
            }
        }
        p.remove(id);
        Ok(Some(p))
    }
}
