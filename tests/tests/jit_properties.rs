//! Randomised differential tests of the JIT, one kernel family at a time: seeded random shapes and
//! attributes (odd sizes, 1x1 and 1-wide planes, channel counts that are not multiples of 4,
//! strides, dilations, asymmetric pads, groups, broadcasting, tails of every tile size) build a
//! small graph, which is compiled both with the full pass pipeline and with no passes, run at 1 and
//! 2 threads, and compared with the reference interpreter.

use incept_ir::Tensor;
use incept_ir::attrs::AttrValue;
use incept_ir::graph::ValueId;
use incept_tests::graphs::{CheckOptions, extent, family, family_with, ints};

#[test]
fn convolutions() {
    family("conv", 1, 70, |r| {
        let n = r.int(1, 2);
        let one_d = r.int(0, 5) == 0;
        let (kh, kw) = if one_d {
            (1, r.pick(&[1, 2, 3, 5]))
        } else {
            r.pick(&[(1, 1), (1, 1), (3, 3), (3, 3), (5, 5), (1, 7), (7, 1), (2, 2), (3, 1)])
        };
        let (sh, sw) = if one_d { (1, r.int(1, 3)) } else { (r.int(1, 3), r.int(1, 3)) };
        let dh = if kh > 1 { r.int(1, 2) } else { 1 };
        let dw = if kw > 1 { r.int(1, 2) } else { 1 };
        let (pt, pb) = if one_d { (0, 0) } else { (r.int(0, kh - 1), r.int(0, kh - 1)) };
        let (pl, pr) = (r.int(0, kw - 1), r.int(0, kw - 1));
        let (group, cg, mg) = match r.int(0, 3) {
            0 | 1 => (1, r.int(1, 9), r.int(1, 13)),
            2 => (r.int(2, 3), r.int(1, 4), r.int(1, 5)),
            _ => (r.int(2, 9), 1, r.int(1, 2)),
        };
        let h = if one_d { 1 } else { extent(r, kh, sh, dh, pt, pb) };
        let w = extent(r, kw, sw, dw, pl, pr);
        let c = group * cg;
        let m = group * mg;
        let mut xdims = vec![n, c];
        let mut wdims = vec![m, cg];
        if !one_d {
            xdims.push(h);
            wdims.push(kh);
        }
        xdims.push(w);
        wdims.push(kw);
        let x = r.input(&xdims);
        let wt = r.weights(&wdims);
        let bias = if r.coin() { Some(r.weights(&[m])) } else { None };
        let attrs = if one_d {
            vec![
                ("kernel_shape", ints(&[kw])),
                ("strides", ints(&[sw])),
                ("pads", ints(&[pl, pr])),
                ("dilations", ints(&[dw])),
            ]
        } else {
            vec![
                ("kernel_shape", ints(&[kh, kw])),
                ("strides", ints(&[sh, sw])),
                ("pads", ints(&[pt, pl, pb, pr])),
                ("dilations", ints(&[dh, dw])),
            ]
        };
        let mut attrs = attrs;
        attrs.push(("group", AttrValue::Int(group as i64)));
        let y = r.op("Conv", attrs, vec![Some(x), Some(wt), bias])?;
        // Epilogues the fusion passes fold into the conv kernel.
        match r.int(0, 3) {
            0 => Some(y),
            1 => r.op("Relu", vec![], vec![Some(y)]),
            2 => {
                let ys = r.shape(y);
                let res = r.input(&ys);
                let s = r.op("Add", vec![], vec![Some(y), Some(res)])?;
                r.op("Relu", vec![], vec![Some(s)])
            }
            _ => {
                let (lo, hi) = (r.konst(Tensor::scalar(0f32)), r.konst(Tensor::scalar(0.5f32)));
                r.op("Clip", vec![], vec![Some(y), Some(lo), Some(hi)])
            }
        }
    });
}

/// 3x3 stride-1 convs with enough channels for the Winograd paths, F(2x2, 3x3) and
/// F(4x4, 3x3) forced in turn (each plan must hold its own transform): odd and even sizes
/// (partial tiles of every remainder), every pad, batches, per-channel and residual epilogues.
#[test]
fn winograd_convolutions() {
    for (tile, step, seed) in [(2, "WinogradInput", 16), (4, "WinogradPad", 17)] {
        let opts = CheckOptions { winograd_tile: Some(tile), expect_step: vec![step], ..Default::default() };
        family_with(&format!("winograd F({tile}x{tile}, 3x3)"), seed, 40, &opts, winograd_graph);
    }
}

fn winograd_graph(r: &mut incept_tests::graphs::Gen) -> Option<ValueId> {
    {
        let n = r.int(1, 2);
        let (c, m) = (r.int(8, 20), r.int(8, 20));
        let pads = [r.int(0, 2), r.int(0, 2), r.int(0, 2), r.int(0, 2)];
        // At least two outputs each way (Winograd declines fewer).
        // Short maps (F(2x2, 3x3) pads them: many border tiles) and tall ones (it checks
        // borders itself).
        let h = (4usize).saturating_sub(pads[0] + pads[2]).max(1) + if r.coin() { r.int(0, 12) } else { r.int(28, 40) };
        // Half the maps are wide enough for rows of sixteen whole tiles (the AVX-512 input
        // transform's groups) at every padding.
        let extra = if r.coin() { r.int(34, 80) } else { r.int(0, 12) };
        let w = (4usize).saturating_sub(pads[1] + pads[3]).max(1) + extra;
        let x = r.input(&[n, c, h, w]);
        let wt = r.weights(&[m, c, 3, 3]);
        let bias = if r.coin() { Some(r.weights(&[m])) } else { None };
        let y =
            r.op("Conv", vec![("pads", ints(&pads)), ("kernel_shape", ints(&[3, 3]))], vec![Some(x), Some(wt), bias])?;
        match r.int(0, 3) {
            0 => Some(y),
            1 => {
                let ys = r.shape(y);
                let res = r.input(&ys);
                let s = r.op("Add", vec![], vec![Some(y), Some(res)])?;
                r.op("Relu", vec![], vec![Some(s)])
            }
            2 => {
                let k = r.weights(&[1, m, 1, 1]);
                let s = r.op("Mul", vec![], vec![Some(y), Some(k)])?;
                let b = r.weights(&[m, 1, 1]);
                r.op("Add", vec![], vec![Some(s), Some(b)])
            }
            _ => r.op("Sigmoid", vec![], vec![Some(y)]),
        }
    }
}

/// Depthwise convs on maps wide enough for the vector paths (four columns per step at strides
/// 1 and 2, the stride-2 one reading a float past its last tap): every pad, dilations, depth
/// multipliers, row widths around the point where the last quad still fits, and epilogues.
#[test]
fn depthwise_convolutions() {
    family("depthwise", 31, 40, |r| {
        let n = r.int(1, 2);
        let (c, mult) = (r.int(1, 6), r.int(1, 2));
        let k = r.pick(&[3, 5]);
        let s = r.int(1, 2);
        let d = if r.int(0, 3) == 0 { 2 } else { 1 };
        let pads = [r.int(0, k - 1), r.int(0, k - 1), r.int(0, k - 1), r.int(0, k - 1)];
        let h = extent(r, k, s, d, pads[0], pads[2]);
        let w = (k - 1) * d + 1 + r.int(4, 40);
        let x = r.input(&[n, c, h, w]);
        let wt = r.weights(&[c * mult, 1, k, k]);
        let bias = if r.coin() { Some(r.weights(&[c * mult])) } else { None };
        let attrs = vec![
            ("kernel_shape", ints(&[k, k])),
            ("strides", ints(&[s, s])),
            ("pads", ints(&pads)),
            ("dilations", ints(&[d, d])),
            ("group", AttrValue::Int(c as i64)),
        ];
        let y = r.op("Conv", attrs, vec![Some(x), Some(wt), bias])?;
        match r.int(0, 2) {
            0 => Some(y),
            1 => r.op("Relu", vec![], vec![Some(y)]),
            _ => {
                let (lo, hi) = (r.konst(Tensor::scalar(0f32)), r.konst(Tensor::scalar(6f32)));
                r.op("Clip", vec![], vec![Some(y), Some(lo), Some(hi)])
            }
        }
    });
}

/// Depthwise convs on small maps, which the AVX-512 tier computes a plane at a time (see
/// `wide_depthwise_plane`): stride 1 with "same" padding and stride 2, 3x3 to 7x7 windows,
/// dilation, every map from 1x1 up to 28 wide, depth multipliers, batches, and the epilogues
/// it takes (bias, ReLU, ReLU6, a residual or per-channel add).
#[test]
fn depthwise_planes() {
    let opts = CheckOptions { expect_kernel: Some("depthwise plane"), ..Default::default() };
    family_with("depthwise_planes", 42, 50, &opts, |r| {
        let n = r.int(1, 2);
        // One channel is an ordinary conv (group 1).
        let (c, mult) = (r.int(2, 6), if r.int(0, 3) == 0 { 2 } else { 1 });
        let k = r.pick(&[3, 3, 5, 7]);
        let s = r.int(1, 2);
        let d = if k == 3 && r.int(0, 3) == 0 { 2 } else { 1 };
        let span = (k - 1) * d;
        // Pads that add up to the window's span: stride 1 keeps the map's size, stride 2 halves
        // it (rounding up), so every input column lies in a phase of the output's width.
        let (top, left) = (r.int(0, span), r.int(0, span));
        let pads = [top, left, span - top, span - left];
        // Planes the kernel unrolls whole (at most 512 vector-tap pairs).
        let most = match k {
            3 => 28,
            5 => 17,
            _ => 12,
        };
        let (h, w) = (r.int(1, most), r.int(1, most));
        if s == 2 && (h + pads[0] + pads[2] < span + 1 || w + pads[1] + pads[3] < span + 1) {
            return None;
        }
        let x = r.input(&[n, c, h, w]);
        let wt = r.weights(&[c * mult, 1, k, k]);
        let bias = if r.coin() { Some(r.weights(&[c * mult])) } else { None };
        let attrs = vec![
            ("kernel_shape", ints(&[k, k])),
            ("strides", ints(&[s, s])),
            ("pads", ints(&pads)),
            ("dilations", ints(&[d, d])),
            ("group", AttrValue::Int(c as i64)),
        ];
        let y = r.op("Conv", attrs, vec![Some(x), Some(wt), bias])?;
        let ys = r.shape(y);
        match r.int(0, 4) {
            0 => Some(y),
            1 => r.op("Relu", vec![], vec![Some(y)]),
            2 => {
                let (lo, hi) = (r.konst(Tensor::scalar(0f32)), r.konst(Tensor::scalar(6f32)));
                r.op("Clip", vec![], vec![Some(y), Some(lo), Some(hi)])
            }
            3 => {
                let res = r.input(&ys);
                r.op("Add", vec![], vec![Some(y), Some(res)])
            }
            _ => {
                let b = r.weights(&[1, ys[1], 1, 1]);
                let a = r.op("Add", vec![], vec![Some(y), Some(b)])?;
                r.op("Relu", vec![], vec![Some(a)])
            }
        }
    });
}

/// 3-D convs and pools (volumetric im2col + GEMM, scalar pools).
#[test]
fn volumes() {
    family("conv3d", 17, 20, |r| {
        let k: Vec<usize> = (0..3).map(|_| r.int(1, 3)).collect();
        let s: Vec<usize> = (0..3).map(|_| r.int(1, 2)).collect();
        let d: Vec<usize> = (0..3).map(|a| if k[a] > 1 { r.int(1, 2) } else { 1 }).collect();
        let pads: Vec<usize> = (0..6).map(|i| r.int(0, k[i % 3] - 1)).collect();
        let dims: Vec<usize> = (0..3).map(|a| extent(r, k[a], s[a], d[a], pads[a], pads[a + 3]).min(7)).collect();
        let group = r.int(1, 2);
        let (cg, mg) = (r.int(1, 3), r.int(1, 5));
        let n = r.int(1, 2);
        let x = r.input(&[n, group * cg, dims[0], dims[1], dims[2]]);
        let wt = r.weights(&[group * mg, cg, k[0], k[1], k[2]]);
        let bias = if r.coin() { Some(r.weights(&[group * mg])) } else { None };
        let attrs = vec![
            ("kernel_shape", ints(&k)),
            ("strides", ints(&s)),
            ("dilations", ints(&d)),
            ("pads", ints(&pads)),
            ("group", AttrValue::Int(group as i64)),
        ];
        let y = r.op("Conv", attrs, vec![Some(x), Some(wt), bias])?;
        if r.coin() { r.op("Relu", vec![], vec![Some(y)]) } else { Some(y) }
    });
    family("pool3d", 18, 20, |r| {
        let max = r.coin();
        let k: Vec<usize> = (0..3).map(|_| r.int(1, 3)).collect();
        let s: Vec<usize> = (0..3).map(|_| r.int(1, 2)).collect();
        let pads: Vec<usize> = (0..6).map(|i| r.int(0, k[i % 3] - 1)).collect();
        let dims: Vec<usize> = (0..3).map(|a| extent(r, k[a], s[a], 1, pads[a], pads[a + 3]).min(7)).collect();
        let c = r.int(1, 3);
        let x = r.input(&[1, c, dims[0], dims[1], dims[2]]);
        let mut attrs = vec![
            ("kernel_shape", ints(&k)),
            ("strides", ints(&s)),
            ("pads", ints(&pads)),
            ("ceil_mode", AttrValue::Int(r.coin() as i64)),
        ];
        if max {
            r.op("MaxPool", attrs, vec![Some(x)])
        } else {
            attrs.push(("count_include_pad", AttrValue::Int(r.coin() as i64)));
            r.op("AveragePool", attrs, vec![Some(x)])
        }
    });
}

#[test]
fn transposed_convolutions() {
    family("conv_transpose", 2, 30, |r| {
        let n = r.int(1, 2);
        let (kh, kw) = r.pick(&[(1, 1), (2, 2), (3, 3), (4, 4), (3, 1)]);
        let (sh, sw) = (r.int(1, 3), r.int(1, 3));
        let (dh, dw) = (r.int(1, 2), r.int(1, 2));
        let pads = [r.int(0, kh - 1), r.int(0, kw - 1), r.int(0, kh - 1), r.int(0, kw - 1)];
        let op = [r.int(0, sh - 1).min(dh.max(sh) - 1), r.int(0, sw - 1).min(dw.max(sw) - 1)];
        let group = r.int(1, 2);
        let (cg, mg) = (r.int(1, 5), r.int(1, 5));
        let (h, w) = (r.int(1, 7), r.int(1, 7));
        let x = r.input(&[n, group * cg, h, w]);
        let wt = r.weights(&[group * cg, mg, kh, kw]);
        let bias = if r.coin() { Some(r.weights(&[group * mg])) } else { None };
        let attrs = vec![
            ("kernel_shape", ints(&[kh, kw])),
            ("strides", ints(&[sh, sw])),
            ("pads", ints(&pads)),
            ("dilations", ints(&[dh, dw])),
            ("output_padding", ints(&op)),
            ("group", AttrValue::Int(group as i64)),
        ];
        r.op("ConvTranspose", attrs, vec![Some(x), Some(wt), bias])
    });
    // 3-D: GEMM over the flattened volume, then the volumetric col2im; weights constant or not.
    family("conv_transpose3d", 25, 25, |r| {
        let n = r.int(1, 2);
        let k: Vec<usize> = (0..3).map(|_| r.int(1, 3)).collect();
        let s: Vec<usize> = (0..3).map(|_| r.int(1, 2)).collect();
        let d: Vec<usize> = (0..3).map(|a| if k[a] > 1 { r.int(1, 2) } else { 1 }).collect();
        let pads: Vec<usize> = (0..6).map(|i| r.int(0, k[i % 3] - 1)).collect();
        let op: Vec<usize> = (0..3).map(|a| r.int(0, s[a] - 1).min(d[a].max(s[a]) - 1)).collect();
        let group = r.int(1, 2);
        let (cg, mg) = (r.int(1, 3), r.int(1, 3));
        let dims: Vec<usize> = (0..3).map(|_| r.int(1, 4)).collect();
        let x = r.input(&[n, group * cg, dims[0], dims[1], dims[2]]);
        let wd = [group * cg, mg, k[0], k[1], k[2]];
        let wt = if r.coin() { r.weights(&wd) } else { r.input(&wd) };
        let bias = if r.coin() { Some(r.weights(&[group * mg])) } else { None };
        let attrs = vec![
            ("kernel_shape", ints(&k)),
            ("strides", ints(&s)),
            ("pads", ints(&pads)),
            ("dilations", ints(&d)),
            ("output_padding", ints(&op)),
            ("group", AttrValue::Int(group as i64)),
        ];
        r.op("ConvTranspose", attrs, vec![Some(x), Some(wt), bias])
    });
}

#[test]
fn pools() {
    family("pool", 3, 60, |r| {
        let max = r.coin();
        let n = r.int(1, 2);
        let c = r.int(1, 6);
        let (kh, kw) = (r.int(1, 4), r.int(1, 4));
        let (sh, sw) = (r.int(1, 3), r.int(1, 3));
        let (dh, dw) = if max { (r.int(1, 2), r.int(1, 2)) } else { (1, 1) };
        let pads = [r.int(0, kh - 1), r.int(0, kw - 1), r.int(0, kh - 1), r.int(0, kw - 1)];
        let h = extent(r, kh, sh, dh, pads[0], pads[2]);
        // Half the maps are wide enough for several four-column steps per row (stride 2 steps
        // load eight floats per tap and stop before the row's end).
        let w = extent(r, kw, sw, dw, pads[1], pads[3]) + if r.coin() { r.int(8, 40) } else { 0 };
        let x = r.input(&[n, c, h, w]);
        let mut attrs = vec![
            ("kernel_shape", ints(&[kh, kw])),
            ("strides", ints(&[sh, sw])),
            ("pads", ints(&pads)),
            ("ceil_mode", AttrValue::Int(r.coin() as i64)),
        ];
        if max {
            attrs.push(("dilations", ints(&[dh, dw])));
            r.op("MaxPool", attrs, vec![Some(x)])
        } else {
            attrs.push(("count_include_pad", AttrValue::Int(r.coin() as i64)));
            r.op("AveragePool", attrs, vec![Some(x)])
        }
    });
    // MaxPool's Indices output, 1-D to 3-D, both storage orders.
    family("max_pool_indices", 19, 25, |r| {
        let nsp = r.int(1, 3);
        let k: Vec<usize> = (0..nsp).map(|_| r.int(1, 3)).collect();
        let s: Vec<usize> = (0..nsp).map(|_| r.int(1, 2)).collect();
        let pads: Vec<usize> = (0..2 * nsp).map(|i| r.int(0, k[i % nsp] - 1)).collect();
        let mut dims = vec![r.int(1, 2), r.int(1, 3)];
        for a in 0..nsp {
            let e = extent(r, k[a], s[a], 1, pads[a], pads[a + nsp]).min(8);
            dims.push(e);
        }
        let x = r.input(&dims);
        let attrs = vec![
            ("kernel_shape", ints(&k)),
            ("strides", ints(&s)),
            ("pads", ints(&pads)),
            ("storage_order", AttrValue::Int(r.coin() as i64)),
        ];
        let outs = r.op_n("MaxPool", attrs, vec![Some(x)], 2)?;
        r.extra.push(outs[1]);
        Some(outs[0])
    });
    family("global_pool", 4, 20, |r| {
        let dims = [r.int(1, 2), r.int(1, 9), r.int(1, 9), r.int(1, 9)];
        let x = r.input(&dims);
        let op = if r.coin() { "GlobalAveragePool" } else { "GlobalMaxPool" };
        r.op(op, vec![], vec![Some(x)])
    });
}

#[test]
fn matrix_products() {
    family("gemm", 5, 50, |r| {
        let (m, n, k) = (r.int(1, 70), r.int(1, 70), r.int(1, 70));
        let (ta, tb) = (r.coin(), r.coin());
        let a = r.input(&if ta { [k, m] } else { [m, k] });
        let bd = if tb { [n, k] } else { [k, n] };
        let b = if r.coin() { r.weights(&bd) } else { r.input(&bd) };
        let c = match r.int(0, 4) {
            0 => None,
            1 => Some(r.weights(&[n])),
            2 => Some(r.weights(&[m, 1])),
            3 => Some(r.weights(&[m, n])),
            _ => Some(r.input(&[1, n])),
        };
        let attrs = vec![
            ("transA", AttrValue::Int(ta as i64)),
            ("transB", AttrValue::Int(tb as i64)),
            ("alpha", AttrValue::Float(r.pick(&[1.0, 0.5, -2.0]))),
            ("beta", AttrValue::Float(r.pick(&[1.0, 0.25]))),
        ];
        let y = r.op("Gemm", attrs, vec![Some(a), Some(b), c])?;
        if r.coin() { r.op("Relu", vec![], vec![Some(y)]) } else { Some(y) }
    });
    family("matmul", 6, 40, |r| {
        let (m, n, k) = (r.int(1, 40), r.int(1, 40), r.int(1, 40));
        let batch: Vec<usize> = (0..r.int(0, 2)).map(|_| r.int(1, 3)).collect();
        let mut ad = batch.clone();
        ad.extend([m, k]);
        let bd = match r.int(0, 2) {
            0 => vec![k, n],
            1 => {
                let mut d = batch.clone();
                d.extend([k, n]);
                d
            }
            _ => vec![k],
        };
        let a = r.input(&ad);
        let b = if r.coin() { r.weights(&bd) } else { r.input(&bd) };
        r.op("MatMul", vec![], vec![Some(a), Some(b)])
    });
    // Batch dims that broadcast in A, in B or in both at once ([2,1,M,K] x [1,3,K,N]), with
    // operands of different ranks; B constant or computed.
    family("matmul_broadcast", 26, 40, |r| {
        let (m, n, k) = (r.int(1, 20), r.int(1, 20), r.int(1, 20));
        let batch: Vec<usize> = (0..r.int(1, 3)).map(|_| r.int(2, 3)).collect();
        let mut ad: Vec<usize> = batch.iter().map(|&d| if r.coin() { d } else { 1 }).collect();
        let mut bd: Vec<usize> = batch.iter().map(|&d| if r.coin() { d } else { 1 }).collect();
        if r.coin() {
            ad.drain(..r.int(0, ad.len()));
        } else {
            bd.drain(..r.int(0, bd.len()));
        }
        ad.extend([m, k]);
        bd.extend([k, n]);
        let a = r.input(&ad);
        let b = if r.coin() { r.weights(&bd) } else { r.input(&bd) };
        let y = r.op("MatMul", vec![], vec![Some(a), Some(b)])?;
        if r.coin() { r.op("Relu", vec![], vec![Some(y)]) } else { Some(y) }
    });
}

#[test]
fn elementwise_chains() {
    family("elementwise", 7, 60, |r| {
        let rank = r.int(1, 4);
        let dims: Vec<usize> = (0..rank).map(|_| r.pick(&[1, 2, 3, 4, 5, 7, 8, 13])).collect();
        let x = r.input(&dims);
        let mut y = x;
        for _ in 0..r.int(1, 3) {
            if r.coin() {
                let u = r.pick(&["Relu", "Sigmoid", "Tanh", "Exp", "Abs", "Neg", "Erf", "Softplus", "HardSwish"]);
                y = r.op(u, vec![], vec![Some(y)])?;
            } else {
                // The other operand broadcasts along a random subset of dims (and may have lower rank).
                let r2 = r.int(0, rank);
                let od: Vec<usize> = dims[rank - r2..].iter().map(|&d| if r.coin() { d } else { 1 }).collect();
                let o = if r.coin() { r.weights(&od) } else { r.input(&od) };
                let b = r.pick(&["Add", "Sub", "Mul", "Max", "Min", "Div"]);
                let (lhs, rhs) = if r.coin() { (y, o) } else { (o, y) };
                if b == "Div" && rhs == o {
                    // Keep divisors away from zero.
                    let e = r.op("Exp", vec![], vec![Some(o)])?;
                    y = r.op(b, vec![], vec![Some(lhs), Some(e)])?;
                } else if b == "Div" {
                    y = r.op("Mul", vec![], vec![Some(lhs), Some(rhs)])?;
                } else {
                    y = r.op(b, vec![], vec![Some(lhs), Some(rhs)])?;
                }
            }
        }
        Some(y)
    });
}

#[test]
fn data_movement() {
    family("concat", 8, 25, |r| {
        let rank = r.int(1, 4);
        let dims: Vec<usize> = (0..rank).map(|_| r.int(1, 6)).collect();
        let axis = r.int(0, rank - 1);
        let parts: Vec<Option<ValueId>> = (0..r.int(1, 3))
            .map(|_| {
                let mut d = dims.clone();
                d[axis] = r.int(1, 5);
                Some(r.input(&d))
            })
            .collect();
        r.op("Concat", vec![("axis", AttrValue::Int(axis as i64))], parts)
    });
    // Inception-style: branches computed by different kernels and concatenated on channels, at
    // batch 1 so each branch writes straight into its slice (an overrun would clobber the next).
    family("concat_branches", 15, 30, |r| {
        let (c, h, w) = (r.int(1, 6), r.int(1, 9), r.int(1, 9));
        let x = r.input(&[1, c, h, w]);
        let mut parts = vec![];
        for _ in 0..r.int(2, 4) {
            let y = match r.int(0, 4) {
                0 => {
                    let m = r.int(1, 7);
                    let wt = r.weights(&[m, c, 1, 1]);
                    r.op("Conv", vec![], vec![Some(x), Some(wt)])?
                }
                1 => {
                    let m = r.int(1, 7);
                    let wt = r.weights(&[m, c, 3, 3]);
                    r.op("Conv", vec![("pads", ints(&[1, 1, 1, 1]))], vec![Some(x), Some(wt)])?
                }
                2 => r.op(
                    "MaxPool",
                    vec![("kernel_shape", ints(&[3, 3])), ("pads", ints(&[1, 1, 1, 1]))],
                    vec![Some(x)],
                )?,
                3 => r.op("Sigmoid", vec![], vec![Some(x)])?,
                _ => {
                    let k = r.int(1, 3);
                    let wt = r.weights(&[c, 1, k, k]);
                    let pads = [k / 2, k / 2, (k - 1) / 2, (k - 1) / 2];
                    let a = vec![("group", AttrValue::Int(c as i64)), ("pads", ints(&pads))];
                    r.op("Conv", a, vec![Some(x), Some(wt)])?
                }
            };
            parts.push(Some(y));
        }
        let cat = r.op("Concat", vec![("axis", AttrValue::Int(1))], parts)?;
        if r.coin() { r.op("Relu", vec![], vec![Some(cat)]) } else { Some(cat) }
    });
    family("transpose", 9, 25, |r| {
        let rank = r.int(2, 4);
        let dims: Vec<usize> = (0..rank).map(|_| r.int(1, 6)).collect();
        let mut perm: Vec<usize> = (0..rank).collect();
        for i in (1..rank).rev() {
            let j = r.int(0, i);
            perm.swap(i, j);
        }
        let x = r.input(&dims);
        r.op("Transpose", vec![("perm", ints(&perm))], vec![Some(x)])
    });
    family("slice", 10, 25, |r| {
        let rank = r.int(1, 4);
        let dims: Vec<usize> = (0..rank).map(|_| r.int(1, 9)).collect();
        let x = r.input(&dims);
        let axis = r.int(0, rank - 1) as i64;
        let d = dims[axis as usize] as i64;
        let step = r.pick(&[1i64, 2, 3, -1, -2]);
        let (s, e) = (r.int(0, d as usize) as i64, r.int(0, d as usize) as i64);
        let (s, e) = if step > 0 { (s.min(e), s.max(e)) } else { (s.max(e), s.min(e) - d - 1) };
        let (s, e, a, st) = (r.ints(&[s]), r.ints(&[e]), r.ints(&[axis]), r.ints(&[step]));
        r.op("Slice", vec![], vec![Some(x), Some(s), Some(e), Some(a), Some(st)])
    });
    family("pad", 11, 30, |r| {
        let dims = [r.int(1, 2), r.int(1, 3), r.int(2, 6), r.int(2, 6)];
        let x = r.input(&dims);
        let mode = r.pick(&["constant", "reflect", "edge", "wrap"]);
        let pads: Vec<i64> = (0..8)
            .map(|i| if i % 4 < 2 { 0 } else { r.int(0, dims[i % 4] - 1) as i64 - (mode == "constant") as i64 })
            .collect();
        let p = r.ints(&pads);
        let v = r.konst(Tensor::scalar(0.5f32));
        r.op("Pad", vec![("mode", AttrValue::Str(mode.into()))], vec![Some(x), Some(p), Some(v)])
    });
    family("resize", 12, 40, |r| {
        let dims = [1, r.int(1, 3), r.int(1, 7), r.int(1, 7)];
        let x = r.input(&dims);
        let mode = r.pick(&["nearest", "linear", "cubic"]);
        let coord = r.pick(&["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]);
        let scales = [1.0f32, 1.0, r.pick(&[0.5, 1.5, 2.0, 3.0]), r.pick(&[0.6, 1.0, 2.0, 2.5])];
        let s = r.konst(Tensor::from_vec(vec![4], scales.to_vec()));
        let attrs = vec![
            ("mode", AttrValue::Str(mode.into())),
            ("coordinate_transformation_mode", AttrValue::Str(coord.into())),
            ("nearest_mode", AttrValue::Str(r.pick(&["round_prefer_floor", "floor", "ceil"]).into())),
        ];
        r.op("Resize", attrs, vec![Some(x), None, Some(s)])
    });
    // tf_crop_and_resize with a region of interest computed at run time (so the tap tables are
    // too): starts in [-0.3, 0.5), ends in [0.5, 1.3), so that some samples fall outside and take
    // the extrapolation value; every mode, antialiasing, cubic's exclude_outside, `axes`.
    family("resize_runtime_roi", 27, 50, |r| {
        let dims = [r.int(1, 2), r.int(1, 3), r.int(1, 7), r.int(1, 7)];
        let x = r.input(&dims);
        let axes: Vec<usize> = match r.int(0, 2) {
            0 => vec![0, 1, 2, 3],
            1 => vec![2, 3],
            _ => vec![3, 2],
        };
        let na = axes.len();
        let raw = r.input(&[2 * na]);
        let k = r.konst(Tensor::scalar(0.4f32));
        let base: Vec<f32> = (0..2 * na).map(|i| if i < na { 0.1 } else { 0.9 }).collect();
        let base = r.konst(Tensor::from_vec(vec![2 * na], base));
        let scaled = r.op("Mul", vec![], vec![Some(raw), Some(k)])?;
        let roi = r.op("Add", vec![], vec![Some(scaled), Some(base)])?;
        let mode = r.pick(&["nearest", "linear", "cubic"]);
        let mut attrs = vec![
            ("mode", AttrValue::Str(mode.into())),
            ("coordinate_transformation_mode", AttrValue::Str("tf_crop_and_resize".into())),
            ("extrapolation_value", AttrValue::Float(r.pick(&[0.0, -7.5]))),
            ("axes", AttrValue::Ints(axes.iter().map(|&a| a as i64).collect())),
        ];
        match mode {
            "nearest" => attrs.push((
                "nearest_mode",
                AttrValue::Str(r.pick(&["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]).into()),
            )),
            "cubic" => {
                attrs.push(("exclude_outside", AttrValue::Int(r.coin() as i64)));
                attrs.push(("antialias", AttrValue::Int(r.coin() as i64)));
            }
            _ => attrs.push(("antialias", AttrValue::Int(r.coin() as i64))),
        }
        if r.coin() {
            let sc: Vec<f32> =
                axes.iter().map(|&a| if a < 2 { 1.0 } else { r.pick(&[0.5, 0.6, 1.0, 1.5, 2.0, 3.0]) }).collect();
            let sc = r.konst(Tensor::from_vec(vec![na], sc));
            r.op("Resize", attrs, vec![Some(x), Some(roi), Some(sc)])
        } else {
            let sz: Vec<i64> = axes.iter().map(|&a| if a < 2 { dims[a] as i64 } else { r.int(1, 9) as i64 }).collect();
            let sz = r.ints(&sz);
            r.op("Resize", attrs, vec![Some(x), Some(roi), None, Some(sz)])
        }
    });
    family("softmax", 13, 20, |r| {
        let rank = r.int(1, 4);
        let dims: Vec<usize> = (0..rank).map(|_| r.int(1, 9)).collect();
        let x = r.input(&dims);
        let axis = r.int(0, rank - 1) as i64 - if r.coin() { rank as i64 } else { 0 };
        let op = r.pick(&["Softmax", "LogSoftmax"]);
        r.op(op, vec![("axis", AttrValue::Int(axis))], vec![Some(x)])
    });
    family("reduce", 14, 30, |r| {
        let rank = r.int(1, 4);
        let dims: Vec<usize> = (0..rank).map(|_| r.int(1, 6)).collect();
        let x = r.input(&dims);
        let axes: Vec<i64> = (0..rank as i64).filter(|_| r.coin()).collect();
        let a = r.ints(&axes);
        let op = r.pick(&["ReduceMean", "ReduceSum", "ReduceMax"]);
        let keep = r.coin() as i64;
        r.op(op, vec![("keepdims", AttrValue::Int(keep))], vec![Some(x), Some(a)])
    });
}

/// Casts between random dtypes (floats scaled so that integer targets see fractions, negatives and
/// out-of-range values), Pow with integer and mixed operands, and integer arithmetic with
/// broadcasting.
#[test]
fn typed_elementwise() {
    use incept_ir::DType::{self, *};
    const NUMERIC: [DType; 10] = [F32, F64, I8, U8, I16, U16, I32, U32, I64, U64];
    family("cast", 20, 40, |r| {
        let rank = r.int(1, 3);
        let dims: Vec<usize> = (0..rank).map(|_| r.int(1, 9)).collect();
        let from = r.pick(&NUMERIC);
        let mut y = r.input_of(from, &dims);
        if from == F32 {
            let k = r.pick(&[1.0f32, 7.5, 300.0, 70000.0, 5e9, 1e19]);
            let c = r.konst(Tensor::scalar(k));
            y = r.op("Mul", vec![], vec![Some(y), Some(c)])?;
        }
        for _ in 0..r.int(1, 2) {
            let to = r.pick(&[F32, F64, I8, U8, I16, U16, I32, U32, I64, U64, Bool]);
            y = r.op("Cast", vec![("to", AttrValue::Int(to as i64))], vec![Some(y)])?;
        }
        Some(y)
    });
    family("pow_typed", 21, 40, |r| {
        let rank = r.int(1, 3);
        let dims: Vec<usize> = (0..rank).map(|_| r.int(1, 9)).collect();
        let (b, e) = (r.pick(&NUMERIC), r.pick(&[F32, F64, I32, I64, U8, U32, U64]));
        let ed: Vec<usize> = dims.iter().map(|&d| if r.coin() { d } else { 1 }).collect();
        let (x, k) = (r.input_of(b, &dims), r.input_of(e, &ed));
        // Float bases and exponents scaled so that results overflow narrow types at times.
        let x = if matches!(b, F32 | F64) { r.op("Mul", vec![], vec![Some(x), Some(x)])? } else { x };
        r.op("Pow", vec![], vec![Some(x), Some(k)])
    });
    family("integer_arithmetic", 22, 40, |r| {
        let rank = r.int(1, 3);
        let dims: Vec<usize> = (0..rank).map(|_| r.int(1, 9)).collect();
        let t = r.pick(&[I8, U8, I16, U16, I32, U32, I64, U64, F64]);
        let mut y = r.input_of(t, &dims);
        for _ in 0..r.int(1, 3) {
            let od: Vec<usize> = dims.iter().map(|&d| if r.coin() { d } else { 1 }).collect();
            let o = r.input_of(t, &od);
            let op = r.pick(&["Add", "Sub", "Mul", "Div", "Max", "Min"]);
            y = if r.coin() {
                r.op(op, vec![], vec![Some(y), Some(o)])?
            } else {
                r.op(op, vec![], vec![Some(o), Some(y)])?
            };
        }
        Some(y)
    });
}

/// f64 Softmax/LogSoftmax and MatMul (with batch broadcasting and 1-D operands): scalar kernels
/// with the reference's order of operations.
#[test]
fn f64_kernels() {
    use incept_ir::DType::F64;
    family("softmax_f64", 23, 20, |r| {
        let rank = r.int(1, 4);
        let dims: Vec<usize> = (0..rank).map(|_| r.int(1, 7)).collect();
        let x = r.input_of(F64, &dims);
        let axis = r.int(0, rank - 1) as i64 - if r.coin() { rank as i64 } else { 0 };
        let op = r.pick(&["Softmax", "LogSoftmax"]);
        r.op(op, vec![("axis", AttrValue::Int(axis))], vec![Some(x)])
    });
    family("matmul_f64", 24, 30, |r| {
        let (m, n, k) = (r.int(1, 9), r.int(1, 9), r.int(1, 9));
        let rank = r.int(0, 2);
        let batch: Vec<usize> = (0..rank).map(|_| r.int(1, 3)).collect();
        let mut ad: Vec<usize> = batch.iter().map(|&d| if r.coin() { d } else { 1 }).collect();
        let mut bd: Vec<usize> = batch.iter().map(|&d| if r.coin() { d } else { 1 }).collect();
        ad.drain(..r.int(0, ad.len()));
        ad.extend([m, k]);
        bd.extend([k, n]);
        if r.int(0, 4) == 0 {
            ad = vec![k];
        }
        if r.int(0, 4) == 0 {
            bd = vec![k];
        }
        let (a, b) = (r.input_of(F64, &ad), r.input_of(F64, &bd));
        r.op("MatMul", vec![], vec![Some(a), Some(b)])
    });
}

/// Values read only at a stride (by 1x1 convs with strides, or strided Slices), which
/// hoist-strides computes only where they are read: the producer a conv or pool at stride 1 or
/// 2, with or without ceil mode, elementwise ops between (full-size operands that get a Slice
/// of their own, per-channel and spatially broadcast ones), one to three readers with one step
/// per dim or (sometimes) different ones, which must leave the graph alone.
#[test]
fn strided_readers() {
    family("strided_readers", 41, 60, |r| {
        let n = r.int(1, 2);
        let c = r.int(1, 6);
        let conv = r.int(0, 2) > 0;
        let (kh, kw) = if conv { r.pick(&[(1, 1), (3, 3), (5, 5), (1, 3)]) } else { (r.int(2, 3), r.int(2, 3)) };
        let (sh, sw) = (r.int(1, 2), r.int(1, 2));
        let d = if conv { r.int(1, 2) } else { 1 };
        let pads = [r.int(0, kh - 1), r.int(0, kw - 1), r.int(0, kh - 1), r.int(0, kw - 1)];
        let h = extent(r, kh, sh, d, pads[0], pads[2]) + r.int(0, 6);
        let w = extent(r, kw, sw, d, pads[1], pads[3]) + r.int(0, 20);
        let x = r.input(&[n, c, h, w]);
        let mut attrs = vec![("kernel_shape", ints(&[kh, kw])), ("strides", ints(&[sh, sw])), ("pads", ints(&pads))];
        let mut y = if conv {
            let m = r.int(1, 8);
            let wt = r.weights(&[m, c, kh, kw]);
            let bias = if r.coin() { Some(r.weights(&[m])) } else { None };
            attrs.push(("dilations", ints(&[d, d])));
            r.op("Conv", attrs, vec![Some(x), Some(wt), bias])?
        } else {
            attrs.push(("ceil_mode", AttrValue::Int(r.coin() as i64)));
            let op = r.pick(&["MaxPool", "AveragePool"]);
            r.op(op, attrs, vec![Some(x)])?
        };
        let ys = r.shape(y);
        for _ in 0..r.int(0, 3) {
            y = match r.int(0, 4) {
                0 => r.op("Relu", vec![], vec![Some(y)])?,
                1 => {
                    let other = r.input(&ys);
                    r.op("Add", vec![], vec![Some(y), Some(other)])?
                }
                2 => {
                    let k = r.weights(&[1, ys[1], 1, 1]);
                    r.op("Mul", vec![], vec![Some(y), Some(k)])?
                }
                3 => {
                    let plane = r.input(&[1, 1, ys[2], ys[3]]);
                    r.op("Sub", vec![], vec![Some(plane), Some(y)])?
                }
                _ => {
                    let (lo, hi) = (r.konst(Tensor::scalar(-0.25f32)), r.konst(Tensor::scalar(0.5f32)));
                    r.op("Clip", vec![], vec![Some(y), Some(lo), Some(hi)])?
                }
            };
        }
        let steps = r.pick(&[[2, 2], [2, 2], [2, 1], [1, 3], [3, 3]]);
        let mut outs = vec![];
        for i in 0..r.int(1, 3) {
            let st = if i > 0 && r.int(0, 5) == 0 { [1, 2] } else { steps };
            let o = if r.int(0, 3) == 0 {
                let axes: &[i64] = if r.coin() { &[2, 3] } else { &[-2, -1] };
                let (s0, e, a, s) = (
                    r.ints(&[0, 0]),
                    r.ints(&[i64::MAX, 1 << 20]),
                    r.ints(axes),
                    r.ints(&[st[0] as i64, st[1] as i64]),
                );
                r.op("Slice", vec![], vec![Some(y), Some(s0), Some(e), Some(a), Some(s)])?
            } else {
                let m = r.int(1, 5);
                let wt = r.weights(&[m, ys[1], 1, 1]);
                r.op("Conv", vec![("kernel_shape", ints(&[1, 1])), ("strides", ints(&st))], vec![Some(y), Some(wt)])?
            };
            outs.push(o);
        }
        let first = outs.remove(0);
        r.extra.extend(outs);
        Some(first)
    });
}

/// bf16 convs whose output rows are too narrow for a problem each (14, 17, 35 wide and the
/// like), computed as one problem over the padded planes' rows end to end and copied out
/// without the columns between rows: kernels 3x3, 5x5, 7x1 and 1x3, odd channel counts, bias
/// or not, activations; against the interpreter on the bf16-rounded graph, where this CPU runs
/// bf16.
#[test]
fn bf16_implicit_rows_end_to_end() {
    use incept_compiler::Precision;
    let opts = CheckOptions {
        precision: Precision::Bf16,
        expect_step: vec!["ImplicitRows"],
        expect_bf16: true,
        ..Default::default()
    };
    family_with("bf16_implicit_rows", 43, 30, &opts, |r| {
        let (kh, kw) = r.pick(&[(3, 3), (3, 3), (5, 5), (7, 1), (1, 3)]);
        let (c, m) = (r.int(1, 40), r.int(1, 40));
        // Rows that fill 32-lane panels badly, but whose padded rows (kw - 1 columns more)
        // are mostly outputs.
        let w = match kw {
            1 => r.pick(&[5, 7, 14, 17, 35]),
            3 => r.pick(&[12, 13, 14, 17, 19, 35, 37]),
            _ => r.pick(&[23, 25, 35, 37]),
        };
        let h = r.int(1, 12);
        let (ph, pw) = (kh / 2, kw / 2);
        let x = r.input(&[1, c, h, w]);
        let wt = r.weights(&[m, c, kh, kw]);
        let bias = if r.coin() { Some(r.weights(&[m])) } else { None };
        let attrs = vec![("kernel_shape", ints(&[kh, kw])), ("pads", ints(&[ph, pw, kh - 1 - ph, kw - 1 - pw]))];
        let y = r.op("Conv", attrs, vec![Some(x), Some(wt), bias])?;
        match r.int(0, 2) {
            0 => Some(y),
            1 => r.op("Relu", vec![], vec![Some(y)]),
            _ => {
                let (lo, hi) = (r.konst(Tensor::scalar(0f32)), r.konst(Tensor::scalar(0.5f32)));
                r.op("Clip", vec![], vec![Some(y), Some(lo), Some(hi)])
            }
        }
    });
}

/// bf16 stride-2 convs on one to four input channels (stems), which run as stride-1 implicit
/// convs over the input's four phases: kernels 2x2 to 7x7 (odd and even, so some phase taps
/// fall past the window), asymmetric pads, odd and even sizes, bias or not, activations and
/// residual adds (per-row problems), against the interpreter on the bf16-rounded graph; every
/// one must skip im2col.
#[test]
fn bf16_stride2_stems_over_phases() {
    use incept_compiler::Precision;
    let opts = CheckOptions {
        precision: Precision::Bf16,
        expect_step: vec!["PackBf16"],
        forbid_step: vec!["Im2col"],
        expect_bf16: true,
        ..Default::default()
    };
    family_with("bf16_stems", 44, 30, &opts, |r| {
        let (kh, kw) = r.pick(&[(7, 7), (3, 3), (5, 5), (2, 2), (3, 1), (1, 3)]);
        let (c, m) = (r.int(1, 4), r.int(1, 40));
        let pads = [r.int(0, kh - 1), r.int(0, kw - 1), r.int(0, kh - 1), r.int(0, kw - 1)];
        let h = extent(r, kh, 2, 1, pads[0], pads[2]) + r.int(0, 20);
        // Output rows that fill the lanes as per-row implicit convs need (residual adds take
        // that form only): the input width solved for one of them.
        let ow = r.pick(&[28usize, 30, 31, 32, 56, 60, 64, 112]);
        let w = (2 * (ow - 1) + kw + r.int(0, 1)).saturating_sub(pads[1] + pads[3]).max(1);
        let x = r.input(&[1, c, h, w]);
        let wt = r.weights(&[m, c, kh, kw]);
        let bias = if r.coin() { Some(r.weights(&[m])) } else { None };
        let attrs = vec![("kernel_shape", ints(&[kh, kw])), ("strides", ints(&[2, 2])), ("pads", ints(&pads))];
        let y = r.op("Conv", attrs, vec![Some(x), Some(wt), bias])?;
        let ys = r.shape(y);
        match r.int(0, 2) {
            0 => Some(y),
            1 => r.op("Relu", vec![], vec![Some(y)]),
            _ => {
                let res = r.input(&ys);
                r.op("Add", vec![], vec![Some(y), Some(res)])
            }
        }
    });
}
