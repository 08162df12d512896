//! N-dimensional iteration shared by the elementwise and copy kernels: stride bookkeeping at
//! compile time, and per-tile offset computation in the generated code.

use cranelift_codegen::ir::Value;

use crate::codegen::builder::Kb;

/// Row-major element strides of a shape.
pub fn contiguous(dims: &[usize]) -> Vec<isize> {
    let mut s = vec![1isize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1] as isize;
    }
    s
}

/// Strides of a tensor of `shape` broadcast (numpy rules) to `out`: 0 along broadcast dims.
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<isize> {
    let own = contiguous(shape);
    let pad = out.len() - shape.len();
    (0..out.len()).map(|k| if k < pad || shape[k - pad] == 1 { 0 } else { own[k - pad] }).collect()
}

/// Drops size-1 dims and merges neighbours that every tensor walks contiguously, so kernels loop
/// over as few dims as possible. Always returns at least one dim.
pub fn collapse(dims: &[usize], strides: &[Vec<isize>]) -> (Vec<usize>, Vec<Vec<isize>>) {
    let mut d: Vec<usize> = vec![];
    let mut s: Vec<Vec<isize>> = vec![vec![]; strides.len()];
    for (i, &n) in dims.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let mergeable =
            !d.is_empty() && strides.iter().enumerate().all(|(k, st)| s[k].last().copied() == Some(st[i] * n as isize));
        if mergeable {
            let last = d.len() - 1;
            d[last] *= n;
            for (k, st) in strides.iter().enumerate() {
                let l = s[k].len() - 1;
                s[k][l] = st[i];
            }
        } else {
            d.push(n);
            for (k, st) in strides.iter().enumerate() {
                s[k].push(st[i]);
            }
        }
    }
    if d.is_empty() {
        d.push(1);
        for sk in &mut s {
            sk.push(0);
        }
    }
    (d, s)
}

/// For `row`, a flat index over `dims` (row-major), each tensor's element offset
/// `sum(index_j * strides[k][j])` plus its base `offsets[k]`.
pub fn emit_offsets(kb: &mut Kb, row: Value, dims: &[usize], strides: &[&[isize]], offsets: &[isize]) -> Vec<Value> {
    let mut acc: Vec<Value> = offsets.iter().map(|&o| kb.iconst(o as i64)).collect();
    let mut rest = row;
    for j in (0..dims.len()).rev() {
        let (q, r) = if j == 0 { (rest, rest) } else { kb.divmod(rest, dims[j] as i64) };
        let idx = if j == 0 { rest } else { r };
        for (k, st) in strides.iter().enumerate() {
            if st[j] != 0 {
                let t = kb.muli(idx, st[j] as i64);
                acc[k] = kb.add(acc[k], t);
            }
        }
        rest = q;
    }
    acc
}
