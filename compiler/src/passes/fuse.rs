//! Lowering fusions (-O2): activations and residual/bias adds move into the epilogue of the
//! Conv/ConvTranspose/Gemm/MatMul that feeds them, and chains of elementwise ops become one
//! Elementwise op, so that later stages emit one kernel (one pass over memory) for each.

use incept_ir::graph::{Graph, NodeId, ValueId};
use incept_ir::ops::binary::broadcast_shapes;
use incept_ir::ops::{Activation, Binary, Elementwise, Expr, Fused, Op, Step, Unary};
use incept_ir::{DType, OpError};

use crate::passes::util::{const_f64, single_user};
use crate::passes::{Pass, PassContext, Patch, PatchValue};

/// The activation a node applies to its input 0, if it is one an epilogue or expression can
/// carry (Clip needs constant bounds).
fn activation(g: &Graph, id: NodeId) -> Option<Activation> {
    let node = g.node(id);
    match &node.op {
        Op::Unary(u) => Some(Activation::Unary(u.clone())),
        Op::Clip(_) => {
            let bound = |i: usize| -> Option<Option<f32>> {
                match node.inputs().get(i).copied().flatten() {
                    None => Some(None),
                    Some(v) => const_f64(g, Some(v)).and_then(|b| b.first().map(|&x| Some(x as f32))),
                }
            };
            Some(Activation::Clip { min: bound(1)?, max: bound(2)? })
        }
        _ => None,
    }
}

/// Activations worth carrying in a Conv/Gemm epilogue. Not Swish (SiLU, written as
/// `Mul(x, Sigmoid(x))` or `Swish`) nor GELU: tried, efficientnet_b0 with SiLU in its conv
/// epilogues ran 29-37 ms against 27.6-29 ms with a separate elementwise pass (1 thread), since
/// the activation's exp is compute-bound on four lanes either way and the epilogue moves the
/// GEMM off its in-kernel path and a depthwise conv off its AVX-512 row kernel.
fn epilogue_activation(a: &Activation) -> bool {
    match a {
        Activation::Clip { .. } => true,
        Activation::Unary(u) => matches!(
            u,
            Unary::Relu
                | Unary::LeakyRelu { .. }
                | Unary::Sigmoid
                | Unary::HardSigmoid { .. }
                | Unary::HardSwish
                | Unary::Tanh
                | Unary::Elu { .. }
        ),
    }
}

/// Moves an activation, or an Add of a value that broadcasts to the output (a residual or a
/// bias), into the epilogue of the linear op that alone feeds it.
pub struct FuseEpilogue;

impl Pass for FuseEpilogue {
    fn name(&self) -> &'static str {
        "fuse-epilogue"
    }
    fn description(&self) -> &'static str {
        "fuse bias/residual Add and activations into the preceding Conv/ConvTranspose/Gemm/MatMul"
    }
    fn rewrite(&self, g: &Graph, id: NodeId, _: &PassContext) -> Result<Option<Patch>, OpError> {
        let node = g.node(id);
        let fusable = |v: ValueId| {
            let op = &g.node(v.node).op;
            (Fused::can_carry(op) || matches!(op, Op::Fused(_)))
                && single_user(g, v).is_some()
                // The JIT's fused kernels compute in f32.
                && g.ty(v).dtype == DType::F32
        };
        let (x, step_operand, act) = match &node.op {
            Op::Binary(Binary::Add) => {
                let (Some(a), Some(b)) = (node.inputs()[0], node.inputs().get(1).copied().flatten()) else {
                    return Ok(None);
                };
                let pick = [(a, b), (b, a)].into_iter().find(|&(x, r)| {
                    x != r
                        && fusable(x)
                        && g.ty(r).dtype == g.ty(x).dtype
                        && broadcast_shapes(&g.ty(x).shape, &g.ty(r).shape).is_ok_and(|s| s == g.ty(x).shape)
                });
                let Some((x, r)) = pick else { return Ok(None) };
                (x, Some(r), None)
            }
            _ => {
                let Some(a) = activation(g, id).filter(epilogue_activation) else { return Ok(None) };
                let Some(x) = node.inputs()[0].filter(|&x| fusable(x)) else { return Ok(None) };
                (x, None, Some(a))
            }
        };
        let producer = g.node(x.node);
        let (base, base_inputs, mut steps) = match &producer.op {
            Op::Fused(f) if f.steps.len() >= Fused::MAX_STEPS => return Ok(None),
            Op::Fused(f) => (f.base.clone(), f.base_inputs, f.steps.clone()),
            op => (Box::new(op.clone()), producer.inputs().len(), vec![]),
        };
        let mut inputs: Vec<Option<PatchValue>> = producer.inputs().iter().map(|i| i.map(PatchValue::from)).collect();
        match (step_operand, act) {
            (Some(r), _) => {
                inputs.push(Some(r.into()));
                steps.push(Step::Add { operand: inputs.len() - 1 });
            }
            (None, Some(a)) => steps.push(Step::Act(a)),
            (None, None) => return Ok(None),
        }
        let mut p = Patch::new();
        let y = p.add_node(&producer.name, Op::Fused(Fused { base, base_inputs, steps }), inputs, 1)[0];
        p.replace(ValueId::new(id, 0), y);
        Ok(Some(p))
    }
}

/// A node as an expression over its own inputs (slots 0..), for the elementwise ops that fuse.
fn as_expr(g: &Graph, id: NodeId) -> Option<(Expr, Vec<ValueId>)> {
    let node = g.node(id);
    // Elementwise kernels compute in f32: other dtypes (f64 chains, Pow with an integer
    // exponent) stay separate ops for the typed kernels.
    let f32_only =
        node.outputs[0].ty.dtype == DType::F32 && node.inputs().iter().flatten().all(|&v| g.ty(v).dtype == DType::F32);
    if !f32_only {
        return None;
    }
    let first = node.inputs().first().copied().flatten()?;
    match &node.op {
        Op::Elementwise(e) => Some((e.expr.clone(), node.inputs().iter().copied().collect::<Option<Vec<_>>>()?)),
        Op::Binary(b) => {
            let second = node.inputs().get(1).copied().flatten()?;
            Some((Expr::Binary(*b, Box::new(Expr::Input(0)), Box::new(Expr::Input(1))), vec![first, second]))
        }
        Op::Unary(_) | Op::Clip(_) => Some((Expr::Act(activation(g, id)?, Box::new(Expr::Input(0))), vec![first])),
        _ => None,
    }
}

/// Renumbers `Input(i)` leaves through `map`.
fn remap(e: &Expr, map: &dyn Fn(usize) -> Expr) -> Expr {
    match e {
        Expr::Input(i) => map(*i),
        Expr::Act(a, x) => Expr::Act(a.clone(), Box::new(remap(x, map))),
        Expr::Binary(b, l, r) => Expr::Binary(*b, Box::new(remap(l, map)), Box::new(remap(r, map))),
    }
}

/// Merges elementwise ops whose result feeds only another elementwise op into one Elementwise.
pub struct FuseElementwise;

impl Pass for FuseElementwise {
    fn name(&self) -> &'static str {
        "fuse-elementwise"
    }
    fn description(&self) -> &'static str {
        "merge chains of elementwise and broadcast ops into one Elementwise op"
    }
    fn rewrite(&self, g: &Graph, id: NodeId, _: &PassContext) -> Result<Option<Patch>, OpError> {
        let Some((expr, ins)) = as_expr(g, id) else { return Ok(None) };
        // The first input computed by another elementwise op that only this node reads.
        let Some((slot, inner)) = ins.iter().enumerate().find_map(|(slot, &v)| {
            if single_user(g, v).is_none() || v.slot != 0 {
                return None;
            }
            as_expr(g, v.node).map(|inner| (slot, inner))
        }) else {
            return Ok(None);
        };
        let (inner_expr, inner_ins) = inner;
        // A long chain fuses into several expressions of bounded size, each merge costing at most
        // that size (see `Expr::MAX_OPS`).
        if expr.ops() + inner_expr.ops() > Expr::MAX_OPS {
            return Ok(None);
        }
        // New inputs: this node's (without the merged one), then the producer's, deduplicated.
        let mut inputs: Vec<ValueId> = vec![];
        let index = |v: ValueId, inputs: &mut Vec<ValueId>| match inputs.iter().position(|&u| u == v) {
            Some(i) => i,
            None => {
                inputs.push(v);
                inputs.len() - 1
            }
        };
        let outer_map: Vec<usize> =
            ins.iter().enumerate().map(|(i, &v)| if i == slot { usize::MAX } else { index(v, &mut inputs) }).collect();
        let inner_map: Vec<usize> = inner_ins.iter().map(|&v| index(v, &mut inputs)).collect();
        let inner_expr = remap(&inner_expr, &|i| Expr::Input(inner_map[i]));
        let merged = remap(&expr, &|i| if i == slot { inner_expr.clone() } else { Expr::Input(outer_map[i]) });
        let mut p = Patch::new();
        let y = p.add(
            &g.node(id).name,
            Op::Elementwise(Elementwise { expr: merged }),
            inputs.into_iter().map(PatchValue::from).collect(),
        );
        p.replace(ValueId::new(id, 0), y);
        Ok(Some(p))
    }
}
