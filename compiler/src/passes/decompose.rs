//! Composite ops rewritten into the ops the backend has kernels for. The JIT has no Einsum
//! kernel, so this pass also runs before lowering at every -O level (see `compile_graph`).

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
