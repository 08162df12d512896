//! Optional operands and attribute forms of the non-linear kernel families, as all-pairs tables
//! (see `jit_epilogues.rs` for the linear ones): an optional input left off the end of the list,
//! given as an empty name, or present (constant or computed at run time), beside the attributes
//! that change which kernel runs. Every row is compiled with and without passes, at 2 and 1
//! threads, and compared with the interpreter; every row must build a valid graph, so no part of
//! a table is silently skipped.

use incept_ir::Tensor;
use incept_ir::attrs::AttrValue;
use incept_ir::graph::ValueId;
use incept_tests::graphs::{Gen, ints};
use incept_tests::pairwise::Dim;
use incept_tests::tables::{Table, optional, valid_order};

fn dims_of(r: &mut Gen, rank: usize, lo: usize, hi: usize) -> Vec<usize> {
    (0..rank).map(|_| r.int(lo, hi)).collect()
}

fn clip_table() -> Table {
    let dims = vec![
        Dim::new("min", &["omitted", "empty", "const", "input"]),
        Dim::new("max", &["omitted", "empty", "const", "input"]),
        Dim::new("order", &["min_below_max", "min_above_max"]),
        Dim::new("rank", &["0", "1", "4"]),
    ];
    fn present(f: &str) -> bool {
        f == "const" || f == "input"
    }
    Table::new(
        "clip",
        dims,
        |r| valid_order(&[r.get("min"), r.get("max")]),
        |r, d| d != "order" || (present(r.get("min")) && present(r.get("max"))),
        |g, row| {
            let rank: usize = row.get("rank").parse().ok()?;
            let shape = dims_of(g, rank, 1, 7);
            let x = g.input(&shape);
            let (lo, hi) = if row.get("order") == "min_above_max" { (0.4f32, -0.2f32) } else { (-0.3, 0.5) };
            let mut ins = vec![Some(x)];
            let bound = |g: &mut Gen, form: &str, v: f32| match form {
                "const" => g.konst(Tensor::scalar(v)),
                // A run-time bound: computed from an input so no pass can fold it.
                _ => {
                    let b = g.input(&[]);
                    let (zero, c) = (g.konst(Tensor::scalar(0f32)), g.konst(Tensor::scalar(v)));
                    let z = g.op("Mul", vec![], vec![Some(b), Some(zero)]);
                    g.op("Add", vec![], vec![z, Some(c)]).unwrap_or(b)
                }
            };
            let (fmin, fmax) = (row.get("min"), row.get("max"));
            if fmin != "omitted" {
                if present(fmin) {
                    let v = bound(g, fmin, lo);
                    ins.push(Some(v));
                } else {
                    ins.push(None);
                }
            }
            if fmax != "omitted" {
                if present(fmax) {
                    let v = bound(g, fmax, hi);
                    ins.push(Some(v));
                } else {
                    ins.push(None);
                }
            }
            g.op("Clip", vec![], ins)
        },
    )
}

fn pad_table() -> Table {
    let dims = vec![
        Dim::new("mode", &["constant", "reflect", "edge", "wrap"]),
        Dim::new("value", &["omitted", "empty", "const"]),
        Dim::new("axes", &["omitted", "positive", "negative"]),
        Dim::new("pads", &["zero", "grow", "crop"]),
    ];
    Table::new(
        "pad",
        dims,
        |r| {
            // The value only exists for constant mode; axes after an omitted value need it empty.
            let value_ok = r.get("mode") == "constant" || r.get("value") != "const";
            let crop_ok = r.get("mode") == "constant" || r.get("pads") != "crop";
            value_ok && crop_ok && valid_order(&[r.get("value"), r.get("axes")])
        },
        |_, _| true,
        |g, row| {
            let rank = g.int(1, 4);
            let shape = dims_of(g, rank, 2, 6);
            let x = g.input(&shape);
            // Pad a subset of axes (all of them when no axes input).
            let axes: Vec<usize> = if row.get("axes") == "omitted" {
                (0..rank).collect()
            } else {
                (0..rank).filter(|_| g.coin()).collect()
            };
            let mut pads = vec![0i64; 2 * axes.len()];
            for (k, &a) in axes.iter().enumerate() {
                let (b, e) = match row.get("pads") {
                    "zero" => (0, 0),
                    "grow" => (g.int(0, shape[a] - 1) as i64, g.int(0, shape[a] - 1) as i64),
                    _ => (-(g.int(0, shape[a] / 2 - 1) as i64), g.int(0, 2) as i64 - 1),
                };
                pads[k] = b;
                pads[axes.len() + k] = e;
            }
            let p = g.ints(&pads);
            let mut ins = vec![Some(x), Some(p)];
            optional(row.get("value"), &mut ins, || g.konst(Tensor::scalar(0.75f32)));
            let axes_form = if row.get("axes") == "omitted" { "omitted" } else { "present" };
            let neg = row.get("axes") == "negative";
            optional(axes_form, &mut ins, || {
                let a: Vec<i64> = axes.iter().map(|&a| if neg { a as i64 - rank as i64 } else { a as i64 }).collect();
                g.ints(&a)
            });
            g.op("Pad", vec![("mode", AttrValue::Str(row.get("mode").into()))], ins)
        },
    )
}

fn slice_table() -> Table {
    let dims = vec![
        Dim::new("axes", &["omitted", "empty", "positive", "negative"]),
        Dim::new("steps", &["omitted", "ones", "mixed"]),
        Dim::new("bounds", &["inside", "clamped", "negative"]),
        Dim::new("rank", &["1", "2", "4"]),
    ];
    Table::new(
        "slice",
        dims,
        |r| valid_order(&[r.get("axes"), r.get("steps")]),
        |_, _| true,
        |g, row| {
            let rank: usize = row.get("rank").parse().ok()?;
            let shape = dims_of(g, rank, 1, 8);
            let x = g.input(&shape);
            let sliced: Vec<usize> = match row.get("axes") {
                "omitted" | "empty" => (0..rank).collect(),
                _ => (0..rank).filter(|_| g.coin()).collect(),
            };
            let (mut starts, mut ends, mut steps) = (vec![], vec![], vec![]);
            for &a in &sliced {
                let d = shape[a] as i64;
                let step = if row.get("steps") == "mixed" { g.pick(&[1i64, 2, -1, -2]) } else { 1 };
                // Never empty: an empty output cannot show a wrong value.
                let s = g.int(0, d as usize - 1) as i64;
                let e =
                    if step > 0 { g.int(s as usize + 1, d as usize) as i64 } else { g.int(0, s as usize) as i64 - 1 };
                let (s, e) = match row.get("bounds") {
                    "clamped" if step > 0 => (s, i64::MAX),
                    "clamped" => (i64::MAX, i64::MIN),
                    // The end of the dim has no negative spelling: keep it.
                    "negative" => (s - d, if e == d { e } else { e - d }),
                    _ => (s, e),
                };
                starts.push(s);
                ends.push(e);
                steps.push(step);
            }
            let (st, en) = (g.ints(&starts), g.ints(&ends));
            let mut ins = vec![Some(x), Some(st), Some(en)];
            let neg = row.get("axes") == "negative";
            let axes: Vec<i64> = sliced.iter().map(|&a| if neg { a as i64 - rank as i64 } else { a as i64 }).collect();
            let axes_form =
                if matches!(row.get("axes"), "positive" | "negative") { "present" } else { row.get("axes") };
            optional(axes_form, &mut ins, || g.ints(&axes));
            let steps_form = if row.get("steps") == "omitted" { "omitted" } else { "present" };
            optional(steps_form, &mut ins, || g.ints(&steps));
            g.op("Slice", vec![], ins)
        },
    )
}

fn pool_table() -> Table {
    let dims = vec![
        Dim::new("op", &["max", "max_indices", "average"]),
        Dim::new("pads", &["none", "symmetric", "asymmetric", "same_upper", "same_lower", "valid"]),
        Dim::new("ceil", &["0", "1"]),
        Dim::new("count_include_pad", &["0", "1"]),
        Dim::new("storage_order", &["0", "1"]),
        Dim::new("rank", &["1", "2", "3"]),
    ];
    Table::new(
        "pool",
        dims,
        // auto_pad forbids explicit pads and, for ONNX, ceil_mode is ignored with it.
        |r| !(r.get("pads").starts_with("same") || r.get("pads") == "valid") || r.get("ceil") == "0",
        |r, d| match d {
            "count_include_pad" => r.get("op") == "average",
            "storage_order" => r.get("op") == "max_indices",
            _ => true,
        },
        |g, row| {
            let nsp: usize = row.get("rank").parse().ok()?;
            let k: Vec<usize> = (0..nsp).map(|_| g.int(1, 3)).collect();
            let s: Vec<usize> = (0..nsp).map(|_| g.int(1, 2)).collect();
            let mut attrs = vec![("kernel_shape", ints(&k)), ("strides", ints(&s))];
            match row.get("pads") {
                "none" => {}
                "symmetric" => {
                    let p: Vec<usize> = k.iter().map(|&k| (k - 1) / 2).collect();
                    attrs.push(("pads", ints(&[p.clone(), p].concat())));
                }
                "asymmetric" => {
                    let p: Vec<usize> = (0..2 * nsp).map(|i| g.int(0, k[i % nsp] - 1)).collect();
                    attrs.push(("pads", ints(&p)));
                }
                "same_upper" => attrs.push(("auto_pad", AttrValue::Str("SAME_UPPER".into()))),
                "same_lower" => attrs.push(("auto_pad", AttrValue::Str("SAME_LOWER".into()))),
                _ => attrs.push(("auto_pad", AttrValue::Str("VALID".into()))),
            }
            attrs.push(("ceil_mode", AttrValue::Int(row.get("ceil").parse().ok()?)));
            let mut shape = vec![g.int(1, 2), g.int(1, 3)];
            shape.extend((0..nsp).map(|a| k[a] + g.int(0, 6)));
            let x = g.input(&shape);
            match row.get("op") {
                "average" => {
                    attrs.push(("count_include_pad", AttrValue::Int(row.get("count_include_pad").parse().ok()?)));
                    g.op("AveragePool", attrs, vec![Some(x)])
                }
                "max" => g.op("MaxPool", attrs, vec![Some(x)]),
                _ => {
                    attrs.push(("storage_order", AttrValue::Int(row.get("storage_order").parse().ok()?)));
                    let outs = g.op_n("MaxPool", attrs, vec![Some(x)], 2)?;
                    g.extra.push(outs[1]);
                    Some(outs[0])
                }
            }
        },
    )
}

fn resize_table() -> Table {
    let dims = vec![
        Dim::new("target", &["scales", "sizes"]),
        Dim::new("roi", &["empty", "const"]),
        Dim::new("mode", &["nearest", "linear", "cubic"]),
        Dim::new(
            "coord",
            &[
                "half_pixel",
                "half_pixel_symmetric",
                "asymmetric",
                "align_corners",
                "pytorch_half_pixel",
                "tf_crop_and_resize",
            ],
        ),
        Dim::new("axes", &["omitted", "spatial"]),
        Dim::new("aspect", &["stretch", "not_larger", "not_smaller"]),
        Dim::new("exclude_outside", &["0", "1"]),
    ];
    Table::new(
        "resize",
        dims,
        // The aspect-ratio policy only applies to sizes.
        |r| r.get("target") == "sizes" || r.get("aspect") == "stretch",
        |r, d| match d {
            "aspect" => r.get("target") == "sizes",
            "exclude_outside" => r.get("mode") == "cubic",
            "roi" => r.get("coord") == "tf_crop_and_resize",
            _ => true,
        },
        |g, row| {
            let shape = [1, g.int(1, 3), g.int(2, 7), g.int(2, 7)];
            let x = g.input(&shape);
            let spatial = row.get("axes") == "spatial";
            let n_axes = if spatial { 2 } else { 4 };
            let mut ins = vec![Some(x)];
            let crop = row.get("coord") == "tf_crop_and_resize";
            // roi is [starts..., ends...] over the resized axes, in normalised coordinates.
            if crop && row.get("roi") == "const" {
                let mut roi = vec![0f32; 2 * n_axes];
                for a in 0..n_axes {
                    roi[a] = if a + 4 - n_axes >= 2 { 0.1 } else { 0.0 };
                    roi[n_axes + a] = if a + 4 - n_axes >= 2 { 0.8 } else { 1.0 };
                }
                ins.push(Some(g.konst(Tensor::from_vec(vec![2 * n_axes], roi))));
            } else {
                ins.push(None);
            }
            if row.get("target") == "scales" {
                let sp = [g.pick(&[0.5f32, 1.5, 2.0, 3.0]), g.pick(&[0.6f32, 1.0, 2.0, 2.5])];
                let scales: Vec<f32> = if spatial { sp.to_vec() } else { vec![1.0, 1.0, sp[0], sp[1]] };
                ins.push(Some(g.konst(Tensor::from_vec(vec![scales.len()], scales))));
            } else {
                ins.push(None);
                // Sizes of at least the input: with an aspect-ratio policy over all four axes,
                // smaller ones would shrink the batch and channel axes to nothing.
                let sp = [g.int(shape[2], 12) as i64, g.int(shape[3], 12) as i64];
                let sizes: Vec<i64> =
                    if spatial { sp.to_vec() } else { vec![shape[0] as i64, shape[1] as i64, sp[0], sp[1]] };
                ins.push(Some(g.ints(&sizes)));
            }
            let mut attrs = vec![
                ("mode", AttrValue::Str(row.get("mode").into())),
                ("coordinate_transformation_mode", AttrValue::Str(row.get("coord").into())),
                ("exclude_outside", AttrValue::Int(row.get("exclude_outside").parse().ok()?)),
                ("keep_aspect_ratio_policy", AttrValue::Str(row.get("aspect").into())),
                ("extrapolation_value", AttrValue::Float(-0.5)),
            ];
            if spatial {
                attrs.push(("axes", ints(&[2, 3])));
            }
            g.op("Resize", attrs, ins)
        },
    )
}

fn dropout_table() -> Table {
    // Dropout's ratio and training_mode inputs are consumed by the importer (a constant false
    // training_mode, or none); in the IR only the optional mask output remains.
    let dims = vec![Dim::new("mask", &["absent", "present"]), Dim::new("rank", &["1", "3"])];
    Table::new(
        "dropout",
        dims,
        |_| true,
        |_, _| true,
        |g, row| {
            let rank: usize = row.get("rank").parse().ok()?;
            let shape = dims_of(g, rank, 1, 5);
            let x = g.input(&shape);
            if row.get("mask") == "present" {
                let outs = g.op_n("Dropout", vec![], vec![Some(x)], 2)?;
                g.extra.push(outs[1]);
                Some(outs[0])
            } else {
                g.op("Dropout", vec![], vec![Some(x)])
            }
        },
    )
}

fn reduce_table() -> Table {
    let dims = vec![
        Dim::new(
            "op",
            &[
                "ReduceMean",
                "ReduceSum",
                "ReduceMax",
                "ReduceMin",
                "ReduceProd",
                "ReduceL1",
                "ReduceL2",
                "ReduceSumSquare",
                "ReduceLogSum",
                "ReduceLogSumExp",
            ],
        ),
        // "gapped": two runs of reduced axes with a kept one between (reduced in one pass by the
        // kinds whose result changes when split).
        Dim::new("axes", &["omitted", "empty", "positive", "negative", "gapped"]),
        Dim::new("keepdims", &["0", "1"]),
        Dim::new("noop_with_empty_axes", &["0", "1"]),
        Dim::new("dtype", &["f32", "f64"]),
    ];
    Table::new(
        "reduce",
        dims,
        |_| true,
        |r, d| d != "noop_with_empty_axes" || matches!(r.get("axes"), "omitted" | "empty"),
        |g, row| {
            let rank = if row.get("axes") == "gapped" { g.int(3, 4) } else { g.int(1, 4) };
            let shape = dims_of(g, rank, 1, 6);
            let dtype = if row.get("dtype") == "f64" { incept_ir::DType::F64 } else { incept_ir::DType::F32 };
            let mut x = g.input_of(dtype, &shape);
            if row.get("op") == "ReduceLogSum" {
                // A log of a sum of positive numbers: a NaN from a negative sum would hide errors.
                x = g.op("Mul", vec![], vec![Some(x), Some(x)])?;
            }
            let mut ins = vec![Some(x)];
            match row.get("axes") {
                "omitted" => {}
                "empty" => ins.push(Some(g.ints(&[]))),
                "gapped" => ins.push(Some(g.ints(&[0, 2]))),
                form => {
                    let mut axes: Vec<i64> = (0..rank as i64).filter(|_| g.coin()).collect();
                    if axes.is_empty() {
                        axes.push(0);
                    }
                    if form == "negative" {
                        axes.iter_mut().for_each(|a| *a -= rank as i64);
                    }
                    ins.push(Some(g.ints(&axes)));
                }
            }
            let attrs = vec![
                ("keepdims", AttrValue::Int(row.get("keepdims").parse().ok()?)),
                ("noop_with_empty_axes", AttrValue::Int(row.get("noop_with_empty_axes").parse().ok()?)),
            ];
            g.op(row.get("op"), attrs, ins)
        },
    )
}

fn logic_table() -> Table {
    let dims = vec![
        Dim::new(
            "op",
            &[
                "Equal",
                "Less",
                "LessOrEqual",
                "Greater",
                "GreaterOrEqual",
                "And",
                "Or",
                "Xor",
                "Not",
                "Where",
                "Mod",
                "FMod",
            ],
        ),
        Dim::new("dtype", &["f32", "f64", "i64", "i32", "u8", "i8"]),
        Dim::new("broadcast", &["same", "row", "scalar"]),
        Dim::new("rank", &["1", "2", "3"]),
    ];
    Table::new(
        "logic",
        dims,
        |r| {
            let float = matches!(r.get("dtype"), "f32" | "f64");
            // Mod with fmod = 0 is for integers only.
            !(r.get("op") == "Mod" && float)
        },
        |r, d| d != "dtype" || !matches!(r.get("op"), "And" | "Or" | "Xor" | "Not"),
        |g, row| {
            use incept_ir::DType;
            let rank: usize = row.get("rank").parse().ok()?;
            let shape = dims_of(g, rank, 1, 6);
            let other: Vec<usize> = match row.get("broadcast") {
                "same" => shape.clone(),
                "row" => vec![shape[rank - 1]],
                _ => vec![],
            };
            let dtype = match row.get("dtype") {
                "f64" => DType::F64,
                "i64" => DType::I64,
                "i32" => DType::I32,
                "u8" => DType::U8,
                "i8" => DType::I8,
                _ => DType::F32,
            };
            // Small whole numbers, so that equal values (and zero divisors) occur: x * 3 truncated.
            let numbers = |g: &mut Gen, dims: &[usize]| -> Option<ValueId> {
                let x = g.input(dims);
                let k = g.konst(Tensor::scalar(3f32));
                let x = g.op("Mul", vec![], vec![Some(x), Some(k)])?;
                // Through i32, so that float operands are whole numbers too and ties occur.
                let x = g.op("Cast", vec![("to", AttrValue::Int(DType::I32 as i64))], vec![Some(x)])?;
                g.op("Cast", vec![("to", AttrValue::Int(dtype as i64))], vec![Some(x)])
            };
            let bools = |g: &mut Gen, dims: &[usize]| -> Option<ValueId> {
                let x = g.input(dims);
                let z = g.konst(Tensor::scalar(0f32));
                g.op("Less", vec![], vec![Some(x), Some(z)])
            };
            match row.get("op") {
                op @ ("And" | "Or" | "Xor") => {
                    let (a, b) = (bools(g, &shape)?, bools(g, &other)?);
                    g.op(op, vec![], vec![Some(a), Some(b)])
                }
                "Not" => {
                    let a = bools(g, &shape)?;
                    g.op("Not", vec![], vec![Some(a)])
                }
                "Where" => {
                    let c = bools(g, &other)?;
                    let (a, b) = (numbers(g, &shape)?, numbers(g, &other)?);
                    g.op("Where", vec![], vec![Some(c), Some(a), Some(b)])
                }
                "Mod" | "FMod" => {
                    let (a, b) = (numbers(g, &shape)?, numbers(g, &other)?);
                    let fmod = i64::from(row.get("op") == "FMod");
                    g.op("Mod", vec![("fmod", AttrValue::Int(fmod))], vec![Some(a), Some(b)])
                }
                op => {
                    let (a, b) = (numbers(g, &shape)?, numbers(g, &other)?);
                    g.op(op, vec![], vec![Some(a), Some(b)])
                }
            }
        },
    )
}

fn index_nd_table() -> Table {
    let dims = vec![
        Dim::new("op", &["GatherND", "ScatterND"]),
        Dim::new("indices", &["const", "runtime", "many_const"]),
        Dim::new("reduction", &["none", "add", "mul", "max", "min"]),
        Dim::new("tuple", &["1", "2", "full"]),
        Dim::new("negative", &["no", "yes"]),
    ];
    Table::new(
        "index_nd",
        dims,
        |r| r.get("op") == "ScatterND" || r.get("reduction") == "none",
        |r, d| d != "reduction" || r.get("op") == "ScatterND",
        |g, row| {
            let rank = 3;
            let shape = dims_of(g, rank, 2, 5);
            let k = match row.get("tuple") {
                "1" => 1,
                "2" => 2,
                _ => rank,
            };
            let n = if row.get("indices") == "many_const" { 300 } else { g.int(1, 4) };
            let neg = row.get("negative") == "yes";
            let mut idx = vec![];
            for _ in 0..n {
                for &d in &shape[..k] {
                    let i = g.int(0, d - 1) as i64;
                    idx.push(if neg && g.coin() { i - d as i64 } else { i });
                }
            }
            let ind = Tensor::from_vec(vec![n, k], idx);
            let iv = if row.get("indices") == "runtime" {
                // The table plus a zero computed from an input: no pass can fold it.
                let table = g.konst(ind);
                let p = g.input(&[1]);
                let z = g.konst(Tensor::scalar(0f32));
                let p = g.op("Mul", vec![], vec![Some(p), Some(z)])?;
                let p = g.op("Cast", vec![("to", AttrValue::Int(incept_ir::DType::I64 as i64))], vec![Some(p)])?;
                g.op("Add", vec![], vec![Some(table), Some(p)])?
            } else {
                g.konst(ind)
            };
            let x = g.input(&shape);
            if row.get("op") == "GatherND" {
                return g.op("GatherND", vec![], vec![Some(x), Some(iv)]);
            }
            let mut ushape = vec![n];
            ushape.extend_from_slice(&shape[k..]);
            let u = g.input(&ushape);
            let attrs = match row.get("reduction") {
                "none" => vec![],
                r => vec![("reduction", AttrValue::Str(r.into()))],
            };
            g.op("ScatterND", attrs, vec![Some(x), Some(iv), Some(u)])
        },
    )
}

fn split_table() -> Table {
    let dims = vec![
        Dim::new("split", &["omitted", "input", "num_outputs"]),
        Dim::new("axis", &["first", "last", "negative"]),
        Dim::new("outputs", &["1", "2", "3"]),
    ];
    Table::new(
        "split",
        dims,
        |_| true,
        |_, _| true,
        |g, row| {
            let rank = g.int(1, 4);
            let n: usize = row.get("outputs").parse().ok()?;
            let mut shape = dims_of(g, rank, 1, 5);
            let axis = match row.get("axis") {
                "first" => 0,
                _ => rank - 1,
            };
            shape[axis] = n * g.int(1, 3);
            let x = g.input(&shape);
            let a = if row.get("axis") == "negative" { -1 } else { axis as i64 };
            let mut attrs = vec![("axis", AttrValue::Int(a))];
            let mut ins = vec![Some(x)];
            match row.get("split") {
                "input" => {
                    // Uneven parts that add up to the dim.
                    let d = shape[axis];
                    let mut parts = vec![1i64; n];
                    for _ in n..d {
                        let k = g.int(0, n - 1);
                        parts[k] += 1;
                    }
                    ins.push(Some(g.ints(&parts)));
                }
                "num_outputs" => attrs.push(("num_outputs", AttrValue::Int(n as i64))),
                _ => {}
            }
            let outs = g.op_n("Split", attrs, ins, n)?;
            g.extra.extend(outs[1..].iter().copied());
            Some(outs[0])
        },
    )
}

fn softmax_table() -> Table {
    let dims = vec![
        Dim::new("op", &["Softmax", "LogSoftmax"]),
        Dim::new("axis", &["omitted", "first", "middle", "negative"]),
        Dim::new("rank", &["1", "2", "4"]),
    ];
    Table::new(
        "softmax",
        dims,
        |_| true,
        |_, _| true,
        |g, row| {
            let rank: usize = row.get("rank").parse().ok()?;
            let shape = dims_of(g, rank, 1, 7);
            let x = g.input(&shape);
            let attrs = match row.get("axis") {
                "omitted" => vec![],
                "first" => vec![("axis", AttrValue::Int(0))],
                "middle" => vec![("axis", AttrValue::Int((rank / 2) as i64))],
                _ => vec![("axis", AttrValue::Int(-(rank as i64)))],
            };
            g.op(row.get("op"), attrs, vec![Some(x)])
        },
    )
}

/// Input values of a picking op: distinct, many ties (clipped at both ends), or with NaNs at
/// some positions (added as a constant holding NaN there and 0 elsewhere).
fn pick_values(g: &mut Gen, x: ValueId, shape: &[usize], form: &str) -> Option<ValueId> {
    match form {
        "ties" => {
            let (lo, hi) = (g.konst(Tensor::scalar(-0.3f32)), g.konst(Tensor::scalar(0.3f32)));
            g.op("Clip", vec![], vec![Some(x), Some(lo), Some(hi)])
        }
        "nan" => {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| if g.int(0, 3) == 0 { f32::NAN } else { 0.0 }).collect();
            let c = g.konst(Tensor::from_vec(shape.to_vec(), v));
            g.op("Add", vec![], vec![Some(x), Some(c)])
        }
        _ => Some(x),
    }
}

fn select_table() -> Table {
    let dims = vec![
        Dim::new("op", &["ArgMax", "ArgMin", "TopK_largest", "TopK_smallest"]),
        Dim::new("axis", &["omitted", "first", "last", "negative"]),
        Dim::new("rank", &["1", "2", "3", "4"]),
        Dim::new("dtype", &["f32", "f64"]),
        Dim::new("values", &["distinct", "ties", "nan"]),
        Dim::new("keepdims", &["omitted", "0", "1"]),
        Dim::new("select_last_index", &["omitted", "0", "1"]),
        Dim::new("k", &["1", "some", "all"]),
    ];
    Table::new(
        "select",
        dims,
        |r| !(r.get("rank") == "1" && r.get("keepdims") == "0" && r.get("op").starts_with("Arg")),
        |r, d| match d {
            "keepdims" | "select_last_index" => r.get("op").starts_with("Arg"),
            "k" => r.get("op").starts_with("TopK"),
            _ => true,
        },
        |g, row| {
            let rank: usize = row.get("rank").parse().ok()?;
            let op = row.get("op");
            let shape = dims_of(g, rank, 1, 6);
            let axis: i64 = match row.get("axis") {
                "omitted" if op.starts_with("Arg") => 0,
                "omitted" | "last" => rank as i64 - 1,
                "first" => 0,
                _ => -1 - (g.int(0, rank - 1) as i64),
            };
            let a = if axis < 0 { (axis + rank as i64) as usize } else { axis as usize };
            let mut shape = shape;
            // Long enough along the axis for ties and a k between 1 and all.
            shape[a] = g.int(3, 9);
            let x = g.input(&shape);
            let mut x = pick_values(g, x, &shape, row.get("values"))?;
            if row.get("dtype") == "f64" {
                x = g.op("Cast", vec![("to", AttrValue::Int(incept_ir::DType::F64 as i64))], vec![Some(x)])?;
            }
            let mut attrs = vec![];
            if row.get("axis") != "omitted" {
                attrs.push(("axis", AttrValue::Int(axis)));
            }
            if let Some(arg) = op.strip_prefix("Arg") {
                for key in ["keepdims", "select_last_index"] {
                    if let Ok(v) = row.get(key).parse::<i64>() {
                        attrs.push((key, AttrValue::Int(v)));
                    }
                }
                return g.op(&format!("Arg{arg}"), attrs, vec![Some(x)]);
            }
            if op == "TopK_smallest" {
                attrs.push(("largest", AttrValue::Int(0)));
            }
            let k = match row.get("k") {
                "1" => 1,
                "all" => shape[a],
                _ => g.int(2, shape[a] - 1),
            };
            let kv = g.konst(Tensor::from_vec(vec![1], vec![k as i64]));
            let outs = g.op_n("TopK", attrs, vec![Some(x), Some(kv)], 2)?;
            g.extra.push(outs[1]);
            Some(outs[0])
        },
    )
}

fn gather_elements_table() -> Table {
    let dims = vec![
        Dim::new("axis", &["omitted", "last", "middle", "negative"]),
        Dim::new("rank", &["1", "2", "3"]),
        Dim::new("index_type", &["i64", "i32"]),
        Dim::new("indices", &["const", "runtime"]),
        Dim::new("index_shape", &["same", "smaller", "longer_axis"]),
        Dim::new("negative", &["no", "yes"]),
        Dim::new("dtype", &["f32", "i64"]),
    ];
    Table::new(
        "gather_elements",
        dims,
        |r| !(r.get("rank") == "1" && r.get("index_shape") == "smaller"),
        |_, _| true,
        |g, row| {
            let rank: usize = row.get("rank").parse().ok()?;
            let shape = dims_of(g, rank, 2, 5);
            let axis: i64 = match row.get("axis") {
                "omitted" => 0,
                "last" => rank as i64 - 1,
                "middle" => (rank / 2) as i64,
                _ => -1 - (g.int(0, rank - 1) as i64),
            };
            let a = if axis < 0 { (axis + rank as i64) as usize } else { axis as usize };
            let mut ishape = shape.clone();
            match row.get("index_shape") {
                "smaller" => {
                    // Smaller in some dim other than the axis.
                    let d = (a + 1 + g.int(0, rank - 2)) % rank;
                    ishape[d] -= 1;
                }
                "longer_axis" => ishape[a] += 2,
                _ => {}
            }
            let n: usize = ishape.iter().product();
            let neg = row.get("negative") == "yes";
            let idx: Vec<i64> = (0..n)
                .map(|_| {
                    let i = g.int(0, shape[a] - 1) as i64;
                    if neg && g.coin() { i - shape[a] as i64 } else { i }
                })
                .collect();
            let i32s = row.get("index_type") == "i32";
            let table = if i32s {
                Tensor::from_vec(ishape.clone(), idx.iter().map(|&i| i as i32).collect::<Vec<i32>>())
            } else {
                Tensor::from_vec(ishape.clone(), idx)
            };
            let iv = if row.get("indices") == "runtime" {
                // The table plus a zero computed from an input: no pass can fold it.
                let dt = if i32s { incept_ir::DType::I32 } else { incept_ir::DType::I64 };
                let t = g.konst(table);
                let p = g.input(&[1]);
                let z = g.konst(Tensor::scalar(0f32));
                let p = g.op("Mul", vec![], vec![Some(p), Some(z)])?;
                let p = g.op("Cast", vec![("to", AttrValue::Int(dt as i64))], vec![Some(p)])?;
                g.op("Add", vec![], vec![Some(t), Some(p)])?
            } else {
                g.konst(table)
            };
            let x = if row.get("dtype") == "i64" { g.input_of(incept_ir::DType::I64, &shape) } else { g.input(&shape) };
            let attrs = if row.get("axis") == "omitted" { vec![] } else { vec![("axis", AttrValue::Int(axis))] };
            g.op("GatherElements", attrs, vec![Some(x), Some(iv)])
        },
    )
}

fn instance_norm_table() -> Table {
    let dims = vec![
        Dim::new("rank", &["3", "4", "5"]),
        Dim::new("len_mod4", &["0", "1", "2", "3"]),
        Dim::new("batch", &["1", "2"]),
        Dim::new("params", &["const", "runtime"]),
        Dim::new("epsilon", &["omitted", "given"]),
    ];
    Table::new(
        "instance_norm",
        dims,
        |_| true,
        |_, _| true,
        |g, row| {
            let rank: usize = row.get("rank").parse().ok()?;
            let m: usize = row.get("len_mod4").parse().ok()?;
            let c = g.int(1, 4);
            let mut shape = vec![row.get("batch").parse().ok()?, c];
            // Odd spatial dims before the last, then a last one giving the row length's residue.
            let mut p = 1;
            for _ in 2..rank - 1 {
                let d = g.pick(&[1, 3, 5]);
                p *= d;
                shape.push(d);
            }
            let last = 4 * g.int(0, 2) + (m * p) % 4;
            shape.push(if last == 0 { 4 } else { last });
            let x = g.input(&shape);
            // Centred away from 0, so that a wrong mean shows.
            let k = g.konst(Tensor::scalar(1.5f32));
            let x = g.op("Add", vec![], vec![Some(x), Some(k)])?;
            let (scale, bias) = if row.get("params") == "runtime" {
                (g.input(&[c]), g.input(&[c]))
            } else {
                (g.weights(&[c]), g.weights(&[c]))
            };
            let attrs = if row.get("epsilon") == "given" { vec![("epsilon", AttrValue::Float(1e-2))] } else { vec![] };
            g.op("InstanceNormalization", attrs, vec![Some(x), Some(scale), Some(bias)])
        },
    )
}

fn tile_table() -> Table {
    let dims = vec![
        Dim::new("rank", &["1", "2", "3", "4"]),
        Dim::new("repeats", &["ones", "one_dim", "all_dims"]),
        Dim::new("dtype", &["f32", "i64", "bool"]),
        Dim::new("after", &["input", "conv"]),
    ];
    Table::new(
        "tile",
        dims,
        |r| r.get("after") == "input" || r.get("rank") == "4" && r.get("dtype") == "f32",
        |_, _| true,
        |g, row| {
            let rank: usize = row.get("rank").parse().ok()?;
            let shape = dims_of(g, rank, 1, 4);
            let x = match (row.get("dtype"), row.get("after")) {
                ("i64", _) => g.input_of(incept_ir::DType::I64, &shape),
                ("bool", _) => g.input_of(incept_ir::DType::Bool, &shape),
                (_, "conv") => {
                    let mut s = shape.clone();
                    s[1] = 2;
                    let x = g.input(&s);
                    let w = g.weights(&[shape[1], 2, 1, 1]);
                    g.op("Conv", vec![], vec![Some(x), Some(w)])?
                }
                _ => g.input(&shape),
            };
            let reps: Vec<i64> = match row.get("repeats") {
                "ones" => vec![1; rank],
                "one_dim" => {
                    let d = g.int(0, rank - 1);
                    (0..rank).map(|i| if i == d { g.int(2, 3) as i64 } else { 1 }).collect()
                }
                _ => (0..rank).map(|_| g.int(2, 3) as i64).collect(),
            };
            let r = g.konst(Tensor::from_vec(vec![rank], reps));
            g.op("Tile", vec![], vec![Some(x), Some(r)])
        },
    )
}

fn layer_norm_table() -> Table {
    let dims = vec![
        Dim::new("axis", &["omitted", "first", "middle", "negative"]),
        Dim::new("rank", &["1", "2", "3", "4"]),
        // The row length modulo 4: the kernel's vector body and scalar tail.
        Dim::new("len_mod4", &["0", "1", "2", "3"]),
        Dim::new("scale", &["full", "broadcast", "runtime"]),
        Dim::new("bias", &["omitted", "empty", "const", "broadcast", "runtime"]),
        Dim::new("stats", &["none", "mean", "both", "inv_only"]),
    ];
    Table::new(
        "layer_norm",
        dims,
        |_| true,
        |_, _| true,
        |g, row| {
            let rank: usize = row.get("rank").parse().ok()?;
            let axis: i64 = match row.get("axis") {
                "omitted" => -1,
                "negative" => -((rank as i64 + 1) / 2),
                "first" => 0,
                _ => (rank / 2) as i64,
            };
            let a = if axis < 0 { (axis + rank as i64) as usize } else { axis as usize };
            // Odd normalised dims before the last, then a last dim that makes the row length
            // the row's residue modulo 4 (an odd product is its own inverse modulo 4).
            let m: usize = row.get("len_mod4").parse().ok()?;
            let mut shape = dims_of(g, rank, 1, 4);
            let mut p = 1;
            for d in shape.iter_mut().take(rank - 1).skip(a) {
                *d = g.pick(&[1, 3, 5]);
                p *= *d;
            }
            shape[rank - 1] = 4 * g.int(0, 2) + (m * p) % 4;
            if shape[rank - 1] == 0 {
                shape[rank - 1] = 4;
            }
            let norm = shape[a..].to_vec();
            let x = g.input(&shape);
            // Inputs centred away from 0, so that a wrong mean shows.
            let c = g.konst(Tensor::scalar(1.5f32));
            let x = g.op("Add", vec![], vec![Some(x), Some(c)])?;
            let param = |g: &mut Gen, form: &str| match form {
                "full" | "const" => g.weights(&norm),
                "broadcast" => g.weights(&[norm[norm.len() - 1]]),
                _ => g.input(&norm),
            };
            let scale = param(g, row.get("scale"));
            let mut ins = vec![Some(x), Some(scale)];
            let bias_form = row.get("bias");
            optional(bias_form, &mut ins, || param(g, bias_form));
            let attrs = if row.get("axis") == "omitted" { vec![] } else { vec![("axis", AttrValue::Int(axis))] };
            let attrs = [attrs, vec![("epsilon", AttrValue::Float(1e-3))]].concat();
            let n = match row.get("stats") {
                "none" => 1,
                "mean" => 2,
                _ => 3,
            };
            let outs = g.op_n("LayerNormalization", attrs, ins, n)?;
            match row.get("stats") {
                "mean" => g.extra.push(outs[1]),
                "both" => g.extra.extend([outs[1], outs[2]]),
                "inv_only" => g.extra.push(outs[2]),
                _ => {}
            }
            Some(outs[0])
        },
    )
}

fn gelu_table() -> Table {
    let dims = vec![
        Dim::new("approximate", &["omitted", "none", "tanh"]),
        Dim::new("rank", &["1", "2", "4"]),
        Dim::new("after", &["input", "conv"]),
    ];
    Table::new(
        "gelu",
        dims,
        |_| true,
        |_, _| true,
        |g, row| {
            let rank: usize = row.get("rank").parse().ok()?;
            let x = if row.get("after") == "conv" {
                let shape = [1, 3, g.int(3, 7), g.int(3, 7)];
                let x = g.input(&shape);
                let w = g.weights(&[4, 3, 3, 3]);
                g.op("Conv", vec![], vec![Some(x), Some(w)])?
            } else {
                let shape = dims_of(g, rank, 1, 9);
                g.input(&shape)
            };
            // Spread the inputs over [-4, 4], where GELU bends.
            let k = g.konst(Tensor::scalar(4f32));
            let x = g.op("Mul", vec![], vec![Some(x), Some(k)])?;
            let attrs = match row.get("approximate") {
                "omitted" => vec![],
                a => vec![("approximate", AttrValue::Str(a.into()))],
            };
            g.op("Gelu", attrs, vec![Some(x)])
        },
    )
}

fn einsum_table() -> Table {
    let dims = vec![
        Dim::new(
            "equation",
            &[
                "bij,bjk->bik",
                "B G H I D, B G H J D -> B G H I J",
                "B G H I J, B G H J D -> B G H I D",
                "i,j->ij",
                "i,i->",
                "ij,jk",
                "ijk,jl->lk",
                "ij->i",
                "ij->ji",
                "ijk",
            ],
        ),
        Dim::new("second", &["input", "const"]),
    ];
    Table::new(
        "einsum",
        dims,
        |_| true,
        |r, d| d != "second" || r.get("equation").contains(','),
        |g, row| {
            let eq = row.get("equation");
            let compact: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
            let lhs = compact.split("->").next()?;
            let mut size = std::collections::HashMap::new();
            let mut ins = vec![];
            for (t, term) in lhs.split(',').enumerate() {
                let shape: Vec<usize> = term.chars().map(|c| *size.entry(c).or_insert_with(|| g.int(1, 5))).collect();
                ins.push(Some(if t == 1 && row.get("second") == "const" {
                    g.weights(&shape)
                } else {
                    g.input(&shape)
                }));
            }
            g.op("Einsum", vec![("equation", AttrValue::Str(eq.into()))], ins)
        },
    )
}

fn attention_table() -> Table {
    let dims = vec![
        Dim::new("rank", &["3", "4"]),
        Dim::new("mask", &["none", "bool", "float", "short_bool", "short_float", "const_bool", "masked_row"]),
        Dim::new("causal", &["0", "1"]),
        Dim::new("past", &["no", "yes"]),
        Dim::new("group", &["1", "2"]),
        Dim::new("softcap", &["0", "2"]),
        Dim::new("outputs", &["y", "all"]),
        Dim::new("mode", &["0", "1", "2", "3"]),
    ];
    Table::new(
        "attention",
        dims,
        // The short masks need keys beyond the mask: a cache or a longer key sequence.
        |_| true,
        |r, d| d != "mode" || r.get("outputs") == "all",
        |g, row| {
            use incept_ir::DType;
            let three = row.get("rank") == "3";
            let group: usize = row.get("group").parse().ok()?;
            let (b, hk, ql, nl, d, dv) = (g.int(1, 2), g.int(1, 2), g.int(1, 4), g.int(2, 5), g.int(1, 4), g.int(1, 4));
            let hq = hk * group;
            let pl = if row.get("past") == "yes" { g.int(1, 3) } else { 0 };
            let kl = pl + nl;
            let (q, k, v) = if three {
                (g.input(&[b, ql, hq * d]), g.input(&[b, nl, hk * d]), g.input(&[b, nl, hk * dv]))
            } else {
                (g.input(&[b, hq, ql, d]), g.input(&[b, hk, nl, d]), g.input(&[b, hk, nl, dv]))
            };
            let w = if row.get("mask").starts_with("short") { kl - 1 } else { kl };
            let bools = |g: &mut Gen, dims: &[usize]| -> Option<ValueId> {
                // Mostly true, so that few rows are fully masked.
                let x = g.input(dims);
                let t = g.konst(Tensor::scalar(-0.6f32));
                g.op("Greater", vec![], vec![Some(x), Some(t)])
            };
            let mask = match row.get("mask") {
                "none" => None,
                "bool" | "short_bool" => Some(bools(g, &[ql, w])?),
                "float" | "short_float" => Some(g.input(&[b, 1, ql, w])),
                "const_bool" => {
                    let vals: Vec<bool> = (0..ql * w).map(|i| i % 3 != 1).collect();
                    Some(g.konst(Tensor::from_bools(vec![ql, w], vals)))
                }
                // Row 0 masked everywhere: its output must be 0, not NaN.
                _ => {
                    let vals: Vec<bool> = (0..ql * w).map(|i| i >= w).collect();
                    Some(g.konst(Tensor::from_bools(vec![ql, w], vals)))
                }
            };
            let mut ins = vec![Some(q), Some(k), Some(v), mask];
            if pl > 0 {
                ins.push(Some(g.input(&[b, hk, pl, d])));
                ins.push(Some(g.input(&[b, hk, pl, dv])));
            }
            while ins.last() == Some(&None) {
                ins.pop();
            }
            let mut attrs = vec![("is_causal", AttrValue::Int(row.get("causal").parse().ok()?))];
            if three {
                attrs.push(("q_num_heads", AttrValue::Int(hq as i64)));
                attrs.push(("kv_num_heads", AttrValue::Int(hk as i64)));
            }
            if row.get("softcap") == "2" {
                attrs.push(("softcap", AttrValue::Float(2.0)));
            }
            let outs = if row.get("outputs") == "all" {
                attrs.push(("qk_matmul_output_mode", AttrValue::Int(row.get("mode").parse().ok()?)));
                let o = g.op_n("Attention", attrs, ins, 4)?;
                g.extra.extend(o[1..].iter().copied());
                o
            } else {
                g.op_n("Attention", attrs, ins, 1)?
            };
            let _ = DType::F32;
            Some(outs[0])
        },
    )
}

#[test]
fn clip() {
    clip_table().passes();
}

#[test]
fn pad() {
    pad_table().passes();
}

#[test]
fn slice() {
    slice_table().passes();
}

#[test]
fn pool() {
    pool_table().passes();
}

#[test]
fn resize() {
    resize_table().passes();
}

#[test]
fn dropout() {
    dropout_table().passes();
}

#[test]
fn reduce() {
    reduce_table().passes();
}

#[test]
fn split() {
    split_table().passes();
}

#[test]
fn softmax() {
    softmax_table().passes();
}

#[test]
fn logic() {
    logic_table().passes();
}

#[test]
fn index_nd() {
    index_nd_table().passes();
}

#[test]
fn einsum() {
    einsum_table().passes();
}

#[test]
fn attention() {
    attention_table().passes();
}

#[test]
fn layer_norm() {
    layer_norm_table().passes();
}

#[test]
fn gelu() {
    gelu_table().passes();
}

#[test]
fn select() {
    select_table().passes();
}

#[test]
fn gather_elements() {
    gather_elements_table().passes();
}

#[test]
fn instance_norm() {
    instance_norm_table().passes();
}

#[test]
fn tile() {
    tile_table().passes();
}

/// A check of the checks: with the output's producer corrupted on purpose, every row of every
/// table must fail (a row that still passes could not catch a wrong value either).
#[test]
fn every_row_catches_a_corrupted_output() {
    for table in [
        clip_table(),
        pad_table(),
        slice_table(),
        pool_table(),
        resize_table(),
        dropout_table(),
        reduce_table(),
        split_table(),
        softmax_table(),
        layer_norm_table(),
        gelu_table(),
        logic_table(),
        index_nd_table(),
        einsum_table(),
        attention_table(),
        select_table(),
        gather_elements_table(),
        instance_norm_table(),
        tile_table(),
    ] {
        let (n, _, passed) = table.run(true);
        assert!(
            passed.is_empty(),
            "{}: {} of {n} rows pass with a corrupted output: {:?}",
            table.name,
            passed.len(),
            passed
        );
    }
}
