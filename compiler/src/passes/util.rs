//! Small queries that several passes share.

use incept_ir::graph::{Graph, NodeId, ValueId};
use incept_ir::shape::Dim;
use incept_ir::{DType, Op, Tensor};

/// The only (node, input slot) that reads `v`, when `v` has exactly one use and is not a graph
/// output.
pub fn single_user(g: &Graph, v: ValueId) -> Option<(NodeId, usize)> {
    if g.outputs().contains(&v) {
        return None;
    }
    // Counted first: a value read by many nodes is not copied out to learn that.
    if g.user_count(v) != 1 {
        return None;
    }
    g.users(v).first().copied()
}

/// The value of a constant input, widened to f64, when it is f32 or f64.
pub fn const_f64(g: &Graph, v: Option<ValueId>) -> Option<Vec<f64>> {
    let t = g.const_value(v?)?;
    matches!(t.dtype(), DType::F32 | DType::F64).then(|| t.to_f64s().ok()).flatten()
}

/// Builds a tensor of `dtype` (f32 or f64) from f64 values.
pub fn float_tensor(dtype: DType, shape: Vec<usize>, v: Vec<f64>) -> Tensor {
    match dtype {
        DType::F64 => Tensor::from_vec(shape, v),
        _ => Tensor::from_vec(shape, v.into_iter().map(|x| x as f32).collect::<Vec<f32>>()),
    }
}

/// If `v` is a float constant that broadcasts against a tensor of rank `rank` (>= 2) as one value
/// per channel (dim 1), its C values: shapes `[1, C, 1, ..]`, `[C, 1, ..]` (rank - 1 dims), or a
/// single element.
pub fn per_channel(g: &Graph, v: ValueId, rank: usize, channels: usize) -> Option<Vec<f64>> {
    let t = g.const_value(v)?;
    let vals = const_f64(g, Some(v))?;
    let s = t.shape();
    if vals.len() == 1 {
        return Some(vec![vals[0]; channels]);
    }
    if rank < 2 || s.len() > rank || vals.len() != channels {
        return None;
    }
    // Align to the right, as broadcasting does; the channel must land on dim 1.
    let offset = rank - s.len();
    let ok = s.iter().enumerate().all(|(i, &d)| if offset + i == 1 { d == channels } else { d == 1 });
    (ok && offset <= 1).then_some(vals)
}

/// The known size of dim `i` of a value.
pub fn dim(g: &Graph, v: ValueId, i: usize) -> Option<usize> {
    g.ty(v).shape.get(i).and_then(Dim::known)
}

/// True when a value can take another value's place as a graph output without renaming a graph
/// input or another output (names of inputs and outputs are part of the model's interface).
pub fn can_stand_in_for(g: &Graph, old: ValueId, new: ValueId) -> bool {
    if !g.outputs().contains(&old) {
        return true;
    }
    !g.outputs().contains(&new) && !matches!(g.node(new.node).op, Op::Input(_))
}
