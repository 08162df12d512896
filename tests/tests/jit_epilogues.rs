//! The linear kernels (every conv path, transposed conv, Gemm, MatMul) with every optional operand
//! and epilogue shape, by an all-pairs table per kernel family instead of random draws: bias
//! present/absent; epilogue none / add / activation / add + activation / activation + add / two
//! adds; the residual full-shape, per-channel, per-position or scalar; the residual a graph input,
//! a computed value that dies at the add (in place) or one with a later user; the result written
//! into a concat (in place at batch 1) or not; every activation an epilogue accepts; batch 1 or 2;
//! K within one GEMM K block or over several; one register-tile block of rows and columns or
//! several.
//! Each row is compiled with and without passes, at 1 and 2 threads, on every kernel tier this CPU
//! runs (all pairs of those, see `graphs::ways`), and compared with the interpreter.
//!
//! A mutation check reinjects the operand-numbering bug of issue 7 (a bias-free conv's residual
//! read as its bias) and requires every family with a bias slot to fail.

use incept_compiler::{Fault, Precision};
use incept_ir::Tensor;
use incept_ir::attrs::AttrValue;
use incept_ir::graph::ValueId;
use incept_tests::graphs::{CheckOptions, Gen, check, ints};
use incept_tests::pairwise::{Dim, Row, cover};

/// A kernel family: how to build its linear op for a row, and the step that proves the plan
/// used the kernel the family is about.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    Conv1x1,
    Conv3x3Stride2,
    Winograd,
    Conv5x5,
    Conv7x7Stride2,
    Conv1x7,
    SmallMap,
    Depthwise,
    Grouped,
    Conv1d,
    Conv3d,
    ConvTranspose,
    Gemm,
    MatMul,
}

impl Family {
    const ALL: [Family; 14] = [
        Family::Conv1x1,
        Family::Conv3x3Stride2,
        Family::Winograd,
        Family::Conv5x5,
        Family::Conv7x7Stride2,
        Family::Conv1x7,
        Family::SmallMap,
        Family::Depthwise,
        Family::Grouped,
        Family::Conv1d,
        Family::Conv3d,
        Family::ConvTranspose,
        Family::Gemm,
        Family::MatMul,
    ];

    fn name(self) -> &'static str {
        match self {
            Family::Conv1x1 => "conv1x1",
            Family::Conv3x3Stride2 => "conv3x3s2",
            Family::Winograd => "winograd",
            Family::Conv5x5 => "conv5x5",
            Family::Conv7x7Stride2 => "conv7x7s2",
            Family::Conv1x7 => "conv1x7",
            Family::SmallMap => "conv_small_map",
            Family::Depthwise => "depthwise",
            Family::Grouped => "grouped",
            Family::Conv1d => "conv1d",
            Family::Conv3d => "conv3d",
            Family::ConvTranspose => "conv_transpose",
            Family::Gemm => "gemm",
            Family::MatMul => "matmul",
        }
    }

    fn expect_step(self, precision: Precision) -> &'static str {
        match self {
            // In bf16, 3x3 convs with constant weights are bf16 GEMMs over im2col panels.
            Family::Winograd if precision == Precision::Bf16 => "Conv",
            Family::Winograd => "WinogradOutput",
            Family::Depthwise => "DepthwiseConv",
            Family::ConvTranspose => "Col2im",
            Family::Gemm => "Gemm",
            Family::MatMul => "MatMul",
            _ => "Conv",
        }
    }

    /// Whether the family's conv runs as im2col panels and a GEMM (2-D, so it can be banded).
    fn is_im2col(self) -> bool {
        matches!(
            self,
            Family::Conv1x1
                | Family::Conv3x3Stride2
                | Family::Conv5x5
                | Family::Conv7x7Stride2
                | Family::Conv1x7
                | Family::Grouped
        )
    }

    /// The step that the widest tier's plan must hold for `row` besides `expect_step` (which
    /// every tier's must), when this host has that tier. A small-map conv runs transposed on
    /// AVX-512 unless a residual is laid out neither like the output nor per channel (then the
    /// GEMM applies it untransposed; the second add's layout is random).
    fn expect_widest(self, row: &Row) -> Option<&'static str> {
        let avx512 = incept_compiler::codegen::Tier::host() == incept_compiler::codegen::Tier::Avx512;
        let plane = match row.get("epilogue") {
            "none" | "act" => true,
            "add_add" => false,
            _ => matches!(row.get("residual"), "full" | "channel"),
        };
        (self == Family::SmallMap && avx512 && plane).then_some("TransposedOutput")
    }

    /// Whether bf16 applies to the family's op (a conv, Gemm or MatMul with constant weights on
    /// the GEMM path; Gemm and MatMul on AVX512-BF16 only so far, so not where AMX runs first).
    fn takes_bf16(self) -> bool {
        match self {
            Family::Depthwise | Family::ConvTranspose => false,
            Family::Gemm | Family::MatMul => !incept_compiler::codegen::bf16::Bf16Tier::Amx.runs_here(),
            _ => true,
        }
    }

    fn is_matrix(self) -> bool {
        matches!(self, Family::Gemm | Family::MatMul)
    }
}

const ACTIVATIONS: [&str; 13] = [
    "relu",
    "leaky_relu",
    "sigmoid",
    "hard_sigmoid",
    "hard_swish",
    "tanh",
    "elu",
    "clip_0_6",
    "clip_min",
    "clip_max",
    "silu",
    "swish",
    "gelu",
];

fn dims() -> Vec<Dim> {
    vec![
        // An absent optional input is either left off the end of the input list or given as an
        // empty name (ONNX allows both); the two reach lowering as different input lists.
        Dim::new("bias", &["omitted", "empty", "present"]),
        Dim::new("epilogue", &["none", "add", "act", "add_act", "act_add", "add_add"]),
        Dim::new("residual", &["full", "channel", "position", "scalar"]),
        Dim::new("residual_src", &["input", "computed", "shared"]),
        Dim::new("output", &["plain", "concat"]),
        Dim::new("act", &ACTIVATIONS),
        Dim::new("batch", &["1", "2"]),
        Dim::new("depth", &["shallow", "deep"]),
        Dim::new("width", &["narrow", "wide"]),
        // Im2col panels packed whole, or (forced by a tiny size limit) in bands of output rows,
        // each band packed and multiplied before the next.
        Dim::new("band", &["whole", "banded"]),
        // A 1x1 conv of a graph input packs it into panels; of a value computed in the plan
        // (in the arena), the wide tiers read it in place (up to 64 output channels).
        Dim::new("conv_input", &["graph", "computed"]),
        // Winograd F(2x2, 3x3) or F(4x4, 3x3), forced (the cost model picks per conv).
        Dim::new("wino_tile", &["2", "4"]),
    ]
}

fn has_add(r: &Row) -> bool {
    r.get("epilogue").contains("add")
}

fn has_act(r: &Row) -> bool {
    r.get("epilogue").contains("act")
}

/// The table for one family.
fn table(dims: &[Dim], family: Family) -> Vec<Row<'_>> {
    let active = move |r: &Row, d: &str| match d {
        "residual" | "residual_src" => has_add(r),
        "act" => has_act(r),
        // A Gemm has no batch; a depthwise conv has no GEMM to make deep (wide: rows long
        // enough for its unrolled groups of four vectors).
        "batch" => family != Family::Gemm,
        "depth" => family != Family::Depthwise,
        "band" => family.is_im2col() || family == Family::Winograd,
        "conv_input" => family == Family::Conv1x1,
        "wino_tile" => family == Family::Winograd,
        _ => true,
    };
    cover(dims, |_| true, active)
}

/// The activation of a row applied to `y`.
fn activation(r: &mut Gen, name: &str, y: ValueId) -> Option<ValueId> {
    let f = |v: f32| AttrValue::Float(v);
    match name {
        "relu" => r.op("Relu", vec![], vec![Some(y)]),
        "leaky_relu" => r.op("LeakyRelu", vec![("alpha", f(0.1))], vec![Some(y)]),
        "sigmoid" => r.op("Sigmoid", vec![], vec![Some(y)]),
        "hard_sigmoid" => r.op("HardSigmoid", vec![("alpha", f(0.3)), ("beta", f(0.4))], vec![Some(y)]),
        "hard_swish" => r.op("HardSwish", vec![], vec![Some(y)]),
        "tanh" => r.op("Tanh", vec![], vec![Some(y)]),
        "elu" => r.op("Elu", vec![("alpha", f(0.7))], vec![Some(y)]),
        // SiLU as exporters write it (fused into Swish), and Swish with its own alpha.
        "silu" => {
            let s = r.op("Sigmoid", vec![], vec![Some(y)])?;
            r.op("Mul", vec![], vec![Some(y), Some(s)])
        }
        "swish" => r.op("Swish", vec![("alpha", f(1.7))], vec![Some(y)]),
        "gelu" => r.op("Gelu", vec![], vec![Some(y)]),
        "clip_0_6" | "clip_min" | "clip_max" => {
            let lo =
                (name != "clip_max").then(|| r.konst(Tensor::scalar(if name == "clip_min" { -0.1f32 } else { 0.0 })));
            let hi =
                (name != "clip_min").then(|| r.konst(Tensor::scalar(if name == "clip_max" { 0.3f32 } else { 6.0 })));
            r.op("Clip", vec![], vec![Some(y), lo, hi])
        }
        other => panic!("unknown activation {other}"),
    }
}

/// The linear op of a family on a fresh input: its output and the axis a concat would use.
fn linear(
    r: &mut Gen,
    family: Family,
    bias_form: &str,
    batch: usize,
    size: (bool, bool, bool),
    computed_input: bool,
    wino4: bool,
) -> Option<(ValueId, usize)> {
    let bias = bias_form == "present";
    // The operand list of an op whose last input is the optional bias.
    let with_bias = |mut ins: Vec<Option<ValueId>>, b: Option<ValueId>| {
        match bias_form {
            "omitted" => {}
            _ => ins.push(b),
        }
        ins
    };
    let conv = |r: &mut Gen, c: usize, m: usize, sp: &[usize], k: &[usize], s: &[usize], group: usize| {
        let pads: Vec<usize> = k.iter().map(|&k| k / 2).chain(k.iter().map(|&k| (k - 1) / 2)).collect();
        let mut xd = vec![batch, c];
        xd.extend(sp);
        let mut wd = vec![m, c / group];
        wd.extend(k);
        let x = r.input(&xd);
        let x = if computed_input { r.op("Neg", vec![], vec![Some(x)])? } else { x };
        // Winograd convs get weights scaled by 1/sqrt(fan-in), as trained nets have, so that
        // their outputs are of order one: the check's error is relative to the graph output's
        // scale, and an activation that squashes outputs of order 50 (unscaled, K = 2376)
        // would hold F(4x4, 3x3)'s rounding (about 1e-5 of the conv's scale) to 1e-6.
        let w = if family == Family::Winograd {
            let fan_in: usize = wd[1..].iter().product();
            r.weights_scaled(&wd, 1.0 / (fan_in as f32).sqrt())
        } else {
            r.weights(&wd)
        };
        let b = bias.then(|| r.weights(&[m]));
        let attrs = vec![
            ("kernel_shape", ints(k)),
            ("strides", ints(s)),
            ("pads", ints(&pads)),
            ("group", AttrValue::Int(group as i64)),
        ];
        r.op("Conv", attrs, with_bias(vec![Some(x), Some(w)], b))
    };
    // K over one GEMM K block (512 floats for f32x4, 256 for AVX2) when deep; more than one
    // register-tile block of rows (96) and of columns (64) when wide.
    let (deep, wide, banded) = size;
    let channels = |r: &mut Gen, lo: usize, hi: usize, taps: usize| {
        if deep { 520usize.div_ceil(taps) + r.int(0, 8) } else { r.int(lo, hi) }
    };
    let outs = |r: &mut Gen, lo: usize, hi: usize| if wide { r.int(97, 110) } else { r.int(lo, hi) };
    // A spatial extent giving at least 65 outputs per image when wide (stride s).
    let extent = |r: &mut Gen, lo: usize, hi: usize, s: usize| if wide { 9 * s + r.int(0, 2) } else { r.int(lo, hi) };
    // A banded conv: output rows of about 33 columns and at least 17 of them, so that bands of
    // eight 32-column panels (the fewest a band holds) make two or more on every tier.
    let map = |r: &mut Gen, h: usize, w: usize, s: usize| {
        if banded { (18 * s + r.int(0, 2), 33 * s + r.int(0, 2)) } else { (h, w) }
    };
    let y = match family {
        Family::Conv1x1 => {
            let (c, m) = (channels(r, 1, 9, 1), outs(r, 1, 14));
            let (h, w) = (extent(r, 1, 7, 1), extent(r, 1, 7, 1));
            let (h, w) = map(r, h, w, 1);
            conv(r, c, m, &[h, w], &[1, 1], &[1, 1], 1)?
        }
        Family::Conv3x3Stride2 => {
            let (c, m) = (channels(r, 1, 6, 9), outs(r, 1, 14));
            let (h, w) = (extent(r, 2, 9, 2), extent(r, 2, 9, 2));
            let (h, w) = map(r, h, w, 2);
            conv(r, c, m, &[h, w], &[3, 3], &[2, 2], 1)?
        }
        Family::Winograd => {
            // The Winograd GEMMs' K is the input channels: over the AVX2 K block (256); the
            // f32x4 one (512) is left to the other families, to keep the interpreter's work small.
            let (c, m) = (if deep { 260 + r.int(0, 8) } else { r.int(8, 12) }, outs(r, 8, 14));
            // Tiles of 2x2 outputs: 65 tiles per image need 18x18 outputs. Tiles of 4x4: rows
            // of four or five, so one group of four whole tiles and the row's last group.
            let (h, w) = if wide { (17 + r.int(0, 1), 16 + r.int(0, 2)) } else { (r.int(2, 9), r.int(2, 9)) };
            // Banded: 17 or more rows and columns of tiles, so that bands of 128 tiles make two.
            let side = if wino4 { 50 } else { 34 };
            let (h, w) = if banded { (side + r.int(0, 2), side + r.int(0, 2)) } else { (h, w) };
            conv(r, c, m, &[h, w], &[3, 3], &[1, 1], 1)?
        }
        Family::Conv5x5 => {
            let (c, m) = (channels(r, 1, 5, 25), outs(r, 1, 9));
            let (h, w) = (extent(r, 1, 8, 1), extent(r, 1, 8, 1));
            let (h, w) = map(r, h, w, 1);
            conv(r, c, m, &[h, w], &[5, 5], &[1, 1], 1)?
        }
        Family::Conv7x7Stride2 => {
            let (c, m) = (channels(r, 1, 3, 49), outs(r, 1, 9));
            let (h, w) = (extent(r, 4, 12, 2), extent(r, 4, 12, 2));
            let (h, w) = map(r, h, w, 2);
            conv(r, c, m, &[h, w], &[7, 7], &[2, 2], 1)?
        }
        Family::Conv1x7 => {
            let (c, m) = (channels(r, 1, 5, 7), outs(r, 1, 9));
            let (h, w) = (extent(r, 1, 6, 1), extent(r, 1, 9, 1));
            let (h, w) = map(r, h, w, 1);
            let k = if r.coin() { [1, 7] } else { [7, 1] };
            conv(r, c, m, &[h, w], &k, &[1, 1], 1)?
        }
        Family::SmallMap => {
            // Fewer positions than channels fill GEMM lanes (AVX-512 runs it transposed, see
            // `conv_transposed`): 5x5 to 7x7 outputs, 32 to 64 channels (48: a half-panel tail),
            // 96 to 112 when wide; 1x1, 3x3 at stride 2 (a 9x9 to 14x14 input) or 3x3 with
            // fewer than 8 input channels (more would go to Winograd).
            let m = if wide { r.pick(&[96, 112]) } else { r.pick(&[32, 48, 64]) };
            let (k, s) = if deep { r.pick(&[(1, 1), (3, 2)]) } else { r.pick(&[(1, 1), (3, 1), (3, 2)]) };
            let c = channels(r, 1, 7, k * k);
            let o = r.int(5, 7);
            let hw = if s == 2 { 2 * o - 1 + r.int(0, 1) } else { o };
            conv(r, c, m, &[hw, hw], &[k, k], &[s, s], 1)?
        }
        Family::Depthwise => {
            let (c, mult, h) = (r.int(2, 9), r.int(1, 2), r.int(1, 9));
            let w = if wide { r.int(70, 84) } else { r.int(1, 9) };
            let s = r.int(1, 2);
            conv(r, c, c * mult, &[h, w], &[3, 3], &[s, s], c)?
        }
        Family::Grouped => {
            let (g, k) = (r.int(2, 3), r.pick(&[1, 3]));
            let cg = channels(r, 2, 4, k * k);
            let mg = if wide { 97usize.div_ceil(g) + r.int(0, 4) } else { r.int(1, 5) };
            let (h, w) = (extent(r, 1, 7, 1), extent(r, 1, 7, 1));
            let (h, w) = map(r, h, w, 1);
            conv(r, g * cg, g * mg, &[h, w], &[k, k], &[1, 1], g)?
        }
        Family::Conv1d => {
            let (k, s) = (r.pick(&[1, 3, 5]), r.int(1, 2));
            let (c, m) = (channels(r, 1, 6, k), outs(r, 1, 9));
            let w = if wide { 65 * s + r.int(0, 3) } else { r.int(1, 12) };
            conv(r, c, m, &[w], &[k], &[s], 1)?
        }
        Family::Conv3d => {
            let (c, m) = (channels(r, 1, 3, 27), outs(r, 1, 6));
            let sp = if wide { [5, 4, 4] } else { [r.int(1, 4), r.int(1, 4), r.int(1, 4)] };
            conv(r, c, m, &sp, &[3, 3, 3], &[1, 1, 1], 1)?
        }
        Family::ConvTranspose => {
            // Its GEMM: M = out channels x 9 taps, K = input channels, N = input positions.
            let (c, m) = (channels(r, 1, 5, 1), if wide { 11 + r.int(0, 2) } else { r.int(1, 6) });
            let (h, w) = (extent(r, 1, 5, 1), extent(r, 1, 5, 1));
            let x = r.input(&[batch, c, h, w]);
            let wt = r.weights(&[c, m, 3, 3]);
            let b = bias.then(|| r.weights(&[m]));
            let attrs =
                vec![("kernel_shape", ints(&[3, 3])), ("strides", ints(&[2, 2])), ("pads", ints(&[1, 1, 1, 1]))];
            r.op("ConvTranspose", attrs, with_bias(vec![Some(x), Some(wt)], b))?
        }
        Family::Gemm => {
            let (m, n, k) = (outs(r, 1, 20), if wide { r.int(65, 80) } else { r.int(1, 20) }, channels(r, 1, 30, 1));
            let tb = r.coin();
            let a = r.input(&[m, k]);
            let b = r.weights(&if tb { [n, k] } else { [k, n] });
            let c = bias.then(|| if r.coin() { r.weights(&[n]) } else { r.weights(&[m, n]) });
            let attrs = vec![("transB", AttrValue::Int(tb as i64))];
            r.op("Gemm", attrs, with_bias(vec![Some(a), Some(b)], c))?
        }
        Family::MatMul => {
            let (m, n, k) = (outs(r, 1, 20), if wide { r.int(65, 80) } else { r.int(1, 20) }, channels(r, 1, 30, 1));
            let a = r.input(&[batch, m, k]);
            let b = r.weights(&[k, n]);
            let y = r.op("MatMul", vec![], vec![Some(a), Some(b)])?;
            // A Linear layer as exported: MatMul + Add of a bias vector.
            if bias {
                let bv = r.weights(&[n]);
                r.op("Add", vec![], vec![Some(y), Some(bv)])?
            } else {
                y
            }
        }
    };
    let axis = if family == Family::Gemm { 0 } else { 1 };
    Some((y, axis))
}

/// A residual operand for output shape `ys`, from the row's shape and source.
fn residual(r: &mut Gen, row: &Row, family: Family, ys: &[usize], shape: &str) -> Option<ValueId> {
    let rank = ys.len();
    let dims: Vec<usize> = match shape {
        "full" => ys.to_vec(),
        "scalar" => {
            if r.coin() {
                vec![]
            } else {
                vec![1]
            }
        }
        // Matrices: a row vector (one value per output column, like a bias) and a column.
        "channel" if family.is_matrix() => vec![ys[rank - 1]],
        "position" if family.is_matrix() => {
            let mut d = vec![1; rank];
            d[rank - 2] = ys[rank - 2];
            d
        }
        "channel" => {
            let mut d = vec![1; rank];
            d[1] = ys[1];
            if r.coin() { d[1..].to_vec() } else { d }
        }
        "position" => {
            let mut d = ys.to_vec();
            d[0] = 1;
            d[1] = 1;
            d
        }
        other => panic!("unknown residual shape {other}"),
    };
    let src = row.get("residual_src");
    if src == "input" {
        return Some(r.input(&dims));
    }
    let x = r.input(&dims);
    r.op("Sigmoid", vec![], vec![Some(x)])
}

/// Builds the graph of one row.
fn build(r: &mut Gen, row: &Row, family: Family) -> Option<ValueId> {
    let batch: usize = row.get("batch").parse().expect("batch");
    let batch = if family == Family::Gemm { 1 } else { batch };
    let size = (row.get("depth") == "deep", row.get("width") == "wide", row.get("band") == "banded");
    let computed = family == Family::Conv1x1 && row.get("conv_input") == "computed";
    let wino4 = family == Family::Winograd && row.get("wino_tile") == "4";
    let (mut y, axis) = linear(r, family, row.get("bias"), batch, size, computed, wino4)?;
    let ys = r.shape(y);
    let second = r.pick(&["full", "channel", "position", "scalar"]);
    let steps: Vec<&str> = match row.get("epilogue") {
        "none" => vec![],
        "add" => vec!["add"],
        "act" => vec!["act"],
        "add_act" => vec!["add", "act"],
        "act_add" => vec!["act", "add"],
        _ => vec!["add", "add2"],
    };
    let mut later = vec![];
    for s in steps {
        y = match s {
            "act" => activation(r, row.get("act"), y)?,
            _ => {
                let shape = if s == "add" { row.get("residual") } else { second };
                let res = residual(r, row, family, &ys, shape)?;
                if row.get("residual_src") == "shared" {
                    // The residual has a user after the add: it must not be overwritten in place.
                    later.push(res);
                }
                // Both operand orders occur in exported models.
                if r.coin() {
                    r.op("Add", vec![], vec![Some(y), Some(res)])?
                } else {
                    r.op("Add", vec![], vec![Some(res), Some(y)])?
                }
            }
        };
    }
    // Later users of shared residuals, computed after the add.
    for v in later {
        let u = r.op("Neg", vec![], vec![Some(v)])?;
        r.extra.push(u);
    }
    if row.get("output") == "concat" {
        let mut other = ys.clone();
        other[axis] = r.int(1, 3);
        let o = r.input(&other);
        let parts = if r.coin() { vec![Some(y), Some(o)] } else { vec![Some(o), Some(y)] };
        y = r.op("Concat", vec![("axis", AttrValue::Int(axis as i64))], parts)?;
    }
    Some(y)
}

/// The output height of the graph's (only) Conv, if it has one.
fn conv_output_rows(r: &Gen, _out: ValueId) -> Option<usize> {
    let g = &r.g;
    g.node_ids().find(|&id| g.node(id).op.name() == "Conv").map(|id| {
        let dims = g.ty(ValueId::new(id, 0)).static_dims().expect("static");
        dims.get(2).copied().unwrap_or(1)
    })
}

/// Seed of row `i` of a family's table.
fn seed(family: Family, i: usize) -> u64 {
    family.name().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
        ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Runs a family's table; the error of the first failing row (with its dimensions and seed).
/// On success: the number of rows, and how many of them ran their epilogue as a separate pass.
fn run_table(family: Family, fault: Option<Fault>, stop_at_first: bool) -> Result<(usize, usize), Vec<String>> {
    run_table_in(family, Precision::F32, fault, stop_at_first)
}

/// [`run_table`] in a precision. In bf16 the graphs' constants and inputs are rounded to bf16
/// first (see `graphs::rounded_to_bf16`), so the plan is held to the f32 tolerance.
fn run_table_in(
    family: Family,
    precision: Precision,
    fault: Option<Fault>,
    stop_at_first: bool,
) -> Result<(usize, usize), Vec<String>> {
    let dims = dims();
    let rows = table(&dims, family);
    let bf16 = precision == Precision::Bf16;
    let opts = CheckOptions {
        fault,
        expect_step: vec![family.expect_step(precision)],
        precision,
        expect_bf16: bf16 && family.takes_bf16(),
        ..Default::default()
    };
    let mut failures = vec![];
    let mut separate = 0;
    for (i, row) in rows.iter().enumerate() {
        let s = seed(family, i);
        let mut r = Gen::new(s);
        let Some(out) = build(&mut r, row, family) else {
            failures.push(format!("{} row {i} ({}), seed {s}: not a valid graph", family.name(), row.describe()));
            continue;
        };
        let case = format!("row {i} [{}] seed {s}", row.describe());
        if r.shape(out).contains(&0) {
            failures.push(format!("{} {case}: an empty output tests nothing", family.name()));
            continue;
        }
        let mut opts = opts.clone();
        // Bands of one output row, or one row of Winograd tiles (64 bytes is less than any).
        let banded = row.get("band") == "banded";
        if banded {
            opts.im2col_band_bytes = Some(64);
        }
        // In bf16 the banded rows take the implicit path wherever it applies instead (stride 1,
        // one image: no im2col, banded or not).
        let implicit = bf16 && banded;
        if implicit {
            opts.implicit_min_fill = Some(0.0);
        }
        let wino4 = family == Family::Winograd && row.get("wino_tile") == "4";
        if family == Family::Winograd {
            opts.winograd_tile = Some(if wino4 { 4 } else { 2 });
        }
        if let Some(Fault::Corrupt { node }) = &mut opts.fault
            && node.is_empty()
        {
            // Corrupt this row's output producer.
            *node = r.g.node(out.node).name.clone();
        }
        // A banded row with more than one row (of outputs; of 2x2 tiles for Winograd) must show
        // one pack (or input transform) per band.
        let (pack, rows_per_band) = match family {
            Family::Winograd if bf16 => ("Im2col", 1),
            Family::Winograd if wino4 => ("WinogradInput", 4),
            Family::Winograd => ("WinogradInput", 2),
            _ => ("Im2col", 1),
        };
        let conv_rows = conv_output_rows(&r, out);
        match check(r, out, family.name(), &case, &opts) {
            Ok(ops) => {
                // In bf16 the first plan is the best bf16 tier's: AMX has no transposed GEMM.
                let transposes = !bf16 || !incept_compiler::codegen::bf16::Bf16Tier::Amx.runs_here();
                if let Some(step) = family.expect_widest(row).filter(|_| transposes)
                    && !ops.iter().any(|o| o == step)
                {
                    failures.push(format!("{} {case}: no {step} step on the widest tier: {ops:?}", family.name()));
                }
                let packs = ops.iter().filter(|o| *o == pack).count();
                // A wide tier reads a computed 1x1 conv input in place when it has at most 64 output
                // channels (narrow rows: up to 14): nothing to pack or band.
                // In bf16, whatever the width (see the bf16 pointwise path).
                let in_place = family == Family::Conv1x1
                    && row.get("conv_input") == "computed"
                    && (row.get("width") == "narrow" || bf16)
                    && incept_compiler::codegen::Tier::host() != incept_compiler::codegen::Tier::F32x4;
                if in_place && packs > 0 {
                    failures
                        .push(format!("{} {case}: a computed input packed, not read in place: {ops:?}", family.name()));
                }
                // (An empty plan list: bf16 on a CPU without bf16, nothing ran.)
                let implicit_here = implicit && ops.iter().any(|o| o == "PackBf16") && packs == 0;
                if !in_place
                    && !implicit_here
                    && banded
                    && conv_rows.is_some_and(|h| h > rows_per_band)
                    && packs < 2
                    && !ops.is_empty()
                {
                    failures.push(format!("{} {case}: banded, but {packs} im2col step(s): {ops:?}", family.name()));
                }
                separate += ops.iter().any(|o| o == "Epilogue") as usize
            }
            Err(e) => {
                failures.push(e);
                if stop_at_first {
                    break;
                }
            }
        }
    }
    if failures.is_empty() { Ok((rows.len(), separate)) } else { Err(failures) }
}

fn family_passes(family: Family) {
    family_passes_in(family, Precision::F32)
}

fn family_passes_in(family: Family, precision: Precision) {
    if precision == Precision::Bf16 && incept_tests::graphs::bf16_ways().is_empty() {
        println!("{} in bf16: skipped, this CPU runs no bf16 tier", family.name());
        return;
    }
    match run_table_in(family, precision, None, false) {
        Ok((n, separate)) => println!(
            "{} ({}): {n} rows (all pairs) checked, {separate} with the epilogue as a separate pass",
            family.name(),
            precision.name()
        ),
        Err(f) => panic!("{} of the rows failed; first:\n{}", f.len(), f[0]),
    }
}

/// Every family in bf16 on every bf16 tier this CPU runs (the convs as bf16 GEMMs, the rest in
/// f32 beside them), against the interpreter on the bf16-rounded graph.
mod bf16 {
    use super::*;

    #[test]
    fn conv1x1() {
        family_passes_in(Family::Conv1x1, Precision::Bf16);
    }
    #[test]
    fn conv3x3_stride2() {
        family_passes_in(Family::Conv3x3Stride2, Precision::Bf16);
    }
    #[test]
    fn conv3x3() {
        family_passes_in(Family::Winograd, Precision::Bf16);
    }
    #[test]
    fn conv5x5() {
        family_passes_in(Family::Conv5x5, Precision::Bf16);
    }
    #[test]
    fn conv7x7_stride2() {
        family_passes_in(Family::Conv7x7Stride2, Precision::Bf16);
    }
    #[test]
    fn conv1x7() {
        family_passes_in(Family::Conv1x7, Precision::Bf16);
    }
    #[test]
    fn conv_small_map() {
        family_passes_in(Family::SmallMap, Precision::Bf16);
    }
    #[test]
    fn grouped() {
        family_passes_in(Family::Grouped, Precision::Bf16);
    }
    #[test]
    fn conv1d() {
        family_passes_in(Family::Conv1d, Precision::Bf16);
    }
    #[test]
    fn conv3d() {
        family_passes_in(Family::Conv3d, Precision::Bf16);
    }
    #[test]
    fn gemm() {
        family_passes_in(Family::Gemm, Precision::Bf16);
    }
    #[test]
    fn matmul() {
        family_passes_in(Family::MatMul, Precision::Bf16);
    }
    /// The ops bf16 leaves in f32, compiled with --precision bf16 beside bf16 convs' kernels.
    #[test]
    fn f32_families_in_a_bf16_plan() {
        for family in [Family::Depthwise, Family::ConvTranspose] {
            family_passes_in(family, Precision::Bf16);
        }
    }

    /// The bf16 tables must catch a misplaced pair: with the weights packed with each pair of
    /// consecutive k swapped, every family that takes bf16 fails.
    #[test]
    fn mutation_swapped_pairs_are_caught() {
        if incept_tests::graphs::bf16_ways().is_empty() {
            println!("skipped: this CPU runs no bf16 tier");
            return;
        }
        let mut missed = vec![];
        for family in Family::ALL.into_iter().filter(|f| f.takes_bf16()) {
            if run_table_in(family, Precision::Bf16, Some(Fault::Bf16SwappedPairs), true).is_ok() {
                missed.push(family.name());
            }
        }
        assert!(missed.is_empty(), "swapped bf16 pairs pass the tables of {missed:?}");
    }
}

#[test]
fn conv1x1() {
    family_passes(Family::Conv1x1);
}
#[test]
fn conv3x3_stride2() {
    family_passes(Family::Conv3x3Stride2);
}
#[test]
fn winograd() {
    family_passes(Family::Winograd);
}
#[test]
fn conv5x5() {
    family_passes(Family::Conv5x5);
}
#[test]
fn conv7x7_stride2() {
    family_passes(Family::Conv7x7Stride2);
}
#[test]
fn conv1x7() {
    family_passes(Family::Conv1x7);
}
#[test]
fn conv_small_map() {
    family_passes(Family::SmallMap);
}
#[test]
fn depthwise() {
    family_passes(Family::Depthwise);
}
#[test]
fn grouped() {
    family_passes(Family::Grouped);
}
#[test]
fn conv1d() {
    family_passes(Family::Conv1d);
}
#[test]
fn conv3d() {
    family_passes(Family::Conv3d);
}
#[test]
fn conv_transpose() {
    family_passes(Family::ConvTranspose);
}
#[test]
fn gemm() {
    family_passes(Family::Gemm);
}
#[test]
fn matmul() {
    family_passes(Family::MatMul);
}

/// The tables must catch the operand-numbering bug: with it reinjected, every family whose op
/// has a bias slot fails (MatMul has none, so it is immune by construction).
#[test]
fn mutation_epilogue_operand_as_bias_is_caught() {
    let mut missed = vec![];
    // (The small-map family's convs have biases too, but its table is about layouts.)
    for family in Family::ALL.into_iter().filter(|f| !matches!(f, Family::SmallMap | Family::MatMul)) {
        if run_table(family, Some(Fault::EpilogueOperandAsBias), true).is_ok() {
            missed.push(family.name());
        }
    }
    assert!(missed.is_empty(), "the reinjected operand-numbering bug passes the tables of {missed:?}");
}

/// A check of the checks: with each row's output producer corrupted on purpose, every row fails.
#[test]
fn every_row_catches_a_corrupted_output() {
    for family in [Family::Conv1x1, Family::Depthwise, Family::Gemm] {
        let dims = dims();
        let n = table(&dims, family).len();
        // An empty node name means "this row's output node" (see run_table).
        match run_table(family, Some(Fault::Corrupt { node: String::new() }), false) {
            Ok(_) => panic!("{}: every row passes with a corrupted output", family.name()),
            Err(f) => {
                assert_eq!(f.len(), n, "{}: only {} of {n} rows fail with a corrupted output", family.name(), f.len())
            }
        }
    }
}

/// Every table covers all pairs and stays small enough for CI.
#[test]
fn tables_are_pairwise_and_small() {
    let dims = dims();
    let rows = table(&dims, Family::Conv1x1);
    // At least |epilogue with act| x |activations| rows are needed for the act pairs alone.
    assert!(rows.len() >= 30 && rows.len() <= 120, "{} rows", rows.len());
    for a in ACTIVATIONS {
        for e in ["act", "add_act", "act_add"] {
            assert!(rows.iter().any(|r| r.get("act") == a && r.get("epilogue") == e), "{a} x {e} missing");
        }
    }
    for b in ["omitted", "empty", "present"] {
        for res in ["full", "channel", "position", "scalar"] {
            assert!(rows.iter().any(|r| r.get("bias") == b && r.get("residual") == res && has_add(r)));
        }
    }
}

/// Two bf16 MatMuls with the same K over different row counts: their pair-panel steps must not
/// share a kernel of another tile count (ResNet50's classifier and a small-map conv once did).
#[test]
fn bf16_pair_panels_of_different_sizes_in_one_plan() {
    if incept_tests::graphs::bf16_ways().is_empty() {
        println!("skipped: this CPU runs no bf16 tier");
        return;
    }
    let src = "graph g {\n  input %a : f32[5,64]\n  input %b : f32[30,64]\n  %w = const f32[64,40] random(1)\n  %v = const f32[64,40] random(2)\n  %x = MatMul(%a, %w) : f32[5,40]\n  %y = MatMul(%b, %v) : f32[30,40]\n  output %x, %y\n}\n";
    let g = incept_ir::text::parse(src).expect("parse");
    for (_, threads, cpu) in incept_tests::graphs::bf16_ways() {
        let opts = incept_compiler::CompileOptions { cpu, threads, precision: Precision::Bf16, ..Default::default() };
        let (model, _) = incept_compiler::compile_graph(g.clone(), &opts).unwrap_or_else(|e| panic!("{cpu:?}: {e}"));
        let plan = model.plan();
        assert!(plan.steps.iter().filter(|s| s.op == "PackBf16").count() >= 2, "{cpu:?}: {:?}", plan.steps);
    }
}
