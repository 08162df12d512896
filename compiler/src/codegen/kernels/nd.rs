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

/// The output of a scalar kernel over broadcast inputs as rows of its last dim: `lead` holds the
/// other dims (the rows), `cols` the last. Input i reads row r, column c at
/// `sum_d idx_d(r) * row_strides[i][d] + c * col_strides[i]` (element strides over the output's
/// dims, 0 where it broadcasts). One tile per row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BroadcastRows {
    pub lead: Vec<usize>,
    pub cols: usize,
    pub row_strides: Vec<Vec<usize>>,
    pub col_strides: Vec<usize>,
}

impl BroadcastRows {
    /// Inputs of shapes `inputs` broadcast (numpy rules) to `out`.
    pub fn new(inputs: &[Vec<usize>], out: &[usize]) -> BroadcastRows {
        let r = out.len();
        let (lead, cols) = if r == 0 { (vec![], 1) } else { (out[..r - 1].to_vec(), out[r - 1]) };
        let (mut row_strides, mut col_strides) = (vec![], vec![]);
        for shape in inputs {
            let st = broadcast_strides(shape, out);
            row_strides.push(st[..r.saturating_sub(1)].iter().map(|&x| x as usize).collect());
            col_strides.push(if r == 0 { 0 } else { st[r - 1] as usize });
        }
        BroadcastRows { lead, cols, row_strides, col_strides }
    }

    pub fn tiles(&self) -> usize {
        self.lead.iter().product()
    }

    /// The address of row `r`'s start in every input (`ops`, of elements of `sizes` bytes).
    pub fn emit_row_bases(&self, kb: &mut Kb, r: Value, ops: &[Value], sizes: &[i64]) -> Vec<Value> {
        let starts = self.emit_row_starts(kb, r);
        (0..starts.len()).map(|i| kb.elem(ops[i], starts[i], sizes[i])).collect()
    }

    /// The element offset of row `r`'s start in every input.
    fn emit_row_starts(&self, kb: &mut Kb, r: Value) -> Vec<Value> {
        let mut starts: Vec<Value> = (0..self.row_strides.len()).map(|_| kb.iconst(0)).collect();
        let mut rest = r;
        for d in (0..self.lead.len()).rev() {
            let (q, idx) = kb.divmod(rest, self.lead[d] as i64);
            rest = q;
            for (i, st) in starts.iter_mut().enumerate() {
                let m = kb.muli(idx, self.row_strides[i][d] as i64);
                *st = kb.add(*st, m);
            }
        }
        starts
    }
}
