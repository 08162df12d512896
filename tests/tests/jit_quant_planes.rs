//! Stride-1 windowed QLinearConvs as implicit GEMMs over quad planes (AVX512-VNNI;
//! `codegen/int8_planes.rs`): an all-pairs table of what the planes, the tile's walk and the
//! copy-out depend on (channels around a plane of four, maps narrower and wider than a 16-position
//! store and a 32-column panel, windows of every shape, padding none / same / asymmetric / wider
//! than the window, dilation, output channels around the 12-row tile, both input and output
//! signs, batch 2, two threads) against the interpreter, byte for byte.

use incept_compiler::codegen::int8::Int8Isa;
use incept_compiler::{CompileOptions, Cpu};
use incept_ir::attrs::AttrValue;
use incept_ir::text::parse::SplitMix;
use incept_ir::{DType, Tensor, interp};
use incept_tests::graphs::{Gen, ints};
use incept_tests::pairwise::{Dim, Row, cover};

/// Integers as a tensor of `d` (u8 or i8).
fn typed(d: DType, shape: Vec<usize>, v: &[i64]) -> Tensor {
    match d {
        DType::U8 => Tensor::from_vec(shape, v.iter().map(|&x| x as u8).collect::<Vec<_>>()),
        _ => Tensor::from_vec(shape, v.iter().map(|&x| x as i8).collect::<Vec<_>>()),
    }
}

fn pair(s: &str) -> (usize, usize) {
    let (a, b) = s.split_once('x').expect("AxB");
    (a.parse().expect("a number"), b.parse().expect("a number"))
}

/// A row's geometry: input map, window, dilation and pads (top, left, bottom, right).
struct Geometry {
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    d: usize,
    pads: [usize; 4],
}

impl Geometry {
    fn of(r: &Row) -> Geometry {
        let ((h, w), (kh, kw)) = (pair(r.get("map")), pair(r.get("window")));
        let d: usize = r.get("dilation").parse().expect("a number");
        let (eh, ew) = (d * (kh - 1), d * (kw - 1));
        let pads = match r.get("pads") {
            "same" => [eh / 2, ew / 2, eh - eh / 2, ew - ew / 2],
            "asym" => [eh, 0, 0, ew],
            // Wider than the window: border outputs see padding alone.
            "wide" => [eh + 1, ew + 1, eh + 1, ew + 1],
            _ => [0; 4],
        };
        Geometry { h, w, kh, kw, d, pads }
    }
    fn out(&self) -> (i64, i64) {
        let oh = (self.h + self.pads[0] + self.pads[2]) as i64 - (self.d * (self.kh - 1)) as i64;
        let ow = (self.w + self.pads[1] + self.pads[3]) as i64 - (self.d * (self.kw - 1)) as i64;
        (oh, ow)
    }
}

#[test]
fn planes_convs_match_the_interpreter() {
    if !Int8Isa::Avx512Vnni.on_host() {
        println!("skipped: this CPU has no AVX512-VNNI");
        return;
    }
    let dims = vec![
        Dim::new("channels", &["1", "3", "4", "5", "8", "13"]),
        Dim::new("map", &["1x1", "5x5", "7x7", "14x14", "9x20", "3x40"]),
        Dim::new("window", &["3x3", "1x7", "7x1", "5x5", "2x2"]),
        Dim::new("pads", &["same", "none", "asym", "wide"]),
        Dim::new("dilation", &["1", "2"]),
        Dim::new("out_channels", &["1", "12", "13", "30", "64"]),
        Dim::new("x_type", &["u8", "i8"]),
        Dim::new("y_type", &["u8", "i8"]),
        Dim::new("batch", &["1", "2"]),
        Dim::new("threads", &["1", "2"]),
    ];
    let valid = |r: &Row| {
        let (oh, ow) = Geometry::of(r).out();
        oh >= 1 && ow >= 1
    };
    let rows = cover(&dims, valid, |_, _| true);
    let dtype = |s: &str| if s == "i8" { DType::I8 } else { DType::U8 };
    for (i, r) in rows.iter().enumerate() {
        let geo = Geometry::of(r);
        let c: usize = r.get("channels").parse().expect("a number");
        let m: usize = r.get("out_channels").parse().expect("a number");
        let n: usize = r.get("batch").parse().expect("a number");
        let threads: usize = r.get("threads").parse().expect("a number");
        let (x_type, y_type) = (dtype(r.get("x_type")), dtype(r.get("y_type")));
        let mut s = SplitMix(i as u64 * 7919 + 17);
        let mut graph = Gen::new(i as u64 + 3);
        let g = &mut graph;
        let x = g.input_of(x_type, &[n, c, geo.h, geo.w]);
        let weights: Vec<i8> = (0..m * c * geo.kh * geo.kw).map(|_| (s.next_u64() % 256) as u8 as i8).collect();
        let w = g.konst(Tensor::from_vec(vec![m, c, geo.kh, geo.kw], weights));
        let xz = typed(x_type, vec![], &[if x_type == DType::U8 { 3 } else { -5 }]);
        let yz = typed(y_type, vec![], &[if y_type == DType::U8 { 128 } else { -3 }]);
        let bias: Vec<i32> = (0..m).map(|i| i as i32 * 977 - 4000).collect();
        let w_scales: Vec<f32> = (0..m).map(|i| 0.0005 * (1 + i % 5) as f32).collect();
        let ins = vec![
            Some(x),
            Some(g.konst(Tensor::scalar(0.0625f32))),
            Some(g.konst(xz)),
            Some(w),
            Some(g.konst(Tensor::from_vec(vec![m], w_scales))),
            Some(g.konst(Tensor::from_vec(vec![m], vec![0i8; m]))),
            Some(g.konst(Tensor::scalar(0.25f32))),
            Some(g.konst(yz)),
            Some(g.konst(Tensor::from_vec(vec![m], bias))),
        ];
        let pads: Vec<usize> = vec![geo.pads[0], geo.pads[1], geo.pads[2], geo.pads[3]];
        let attrs = vec![("pads", ints(&pads)), ("dilations", AttrValue::Ints(vec![geo.d as i64; 2]))];
        let out = g.op("QLinearConv", attrs, ins).expect("a valid conv");
        g.g.set_outputs(vec![out]);
        let input = {
            let v: Vec<i64> = (0..n * c * geo.h * geo.w)
                .map(|_| (s.next_u64() % 256) as i64 + if x_type == DType::I8 { -128 } else { 0 })
                .collect();
            typed(x_type, vec![n, c, geo.h, geo.w], &v)
        };
        let want = interp::run(&g.g, std::slice::from_ref(&input)).expect("interpreter");
        // Quad planes even where the byte matrix would cost less (small maps).
        let opts = CompileOptions { cpu: Cpu::Avx512Vnni, threads, int8_planes: Some(true), ..Default::default() };
        let (model, _) = incept_compiler::compile_graph(g.g.clone(), &opts).expect("compile");
        let plan = model.plan();
        let what = r.describe();
        assert!(plan.steps.iter().any(|st| st.op == "QuadPlanes"), "{what}: not in quad planes");
        assert!(plan.kernels.iter().any(|k| k.name.contains("in planes")), "{what}: not the planes GEMM");
        let got = model.run(&[incept_compiler::to_runtime(&input).expect("input")]).expect("run");
        let got = incept_compiler::from_runtime(&got[0]).expect("output");
        assert_eq!(got.bytes(), want[0].bytes(), "{what}");
    }
    println!("{} convs in quad planes checked", rows.len());
}

/// The lowering's choice without the knob: quad planes where their dropped columns cost at most
/// what the byte matrix and its packing do (3x3 convs on 14x14 and 28x28 maps: 224 padded
/// columns' work against 196 positions' 200 and the packing, 840 against 784 and it), the byte
/// matrix on a 7x7 map (63 padded columns cost 64 columns of work, 49 positions 32 + 16 + one);
/// both exact.
#[test]
fn planes_where_they_pay() {
    if !Int8Isa::Avx512Vnni.on_host() {
        println!("skipped: this CPU has no AVX512-VNNI");
        return;
    }
    for (hw, planes) in [(7, false), (14, true), (28, true)] {
        let (c, m) = (8, 16);
        let mut s = SplitMix(hw as u64);
        let mut graph = Gen::new(hw as u64);
        let g = &mut graph;
        let x = g.input_of(DType::U8, &[1, c, hw, hw]);
        let weights: Vec<i8> = (0..m * c * 9).map(|_| (s.next_u64() % 256) as u8 as i8).collect();
        let w = g.konst(Tensor::from_vec(vec![m, c, 3, 3], weights));
        let ins = vec![
            Some(x),
            Some(g.konst(Tensor::scalar(0.0625f32))),
            Some(g.konst(typed(DType::U8, vec![], &[7]))),
            Some(w),
            Some(g.konst(Tensor::scalar(0.001f32))),
            Some(g.konst(Tensor::from_vec(vec![], vec![0i8]))),
            Some(g.konst(Tensor::scalar(0.25f32))),
            Some(g.konst(typed(DType::U8, vec![], &[100]))),
            None,
        ];
        let out = g.op("QLinearConv", vec![("pads", ints(&[1, 1, 1, 1]))], ins).expect("a valid conv");
        g.g.set_outputs(vec![out]);
        let input =
            typed(DType::U8, vec![1, c, hw, hw], &(0..c * hw * hw).map(|i| (i * 31 % 256) as i64).collect::<Vec<_>>());
        let want = interp::run(&g.g, std::slice::from_ref(&input)).expect("interpreter");
        let opts = CompileOptions { cpu: Cpu::Avx512Vnni, ..Default::default() };
        let (model, _) = incept_compiler::compile_graph(g.g.clone(), &opts).expect("compile");
        let took = model.plan().steps.iter().any(|st| st.op == "QuadPlanes");
        assert_eq!(took, planes, "{hw}x{hw}: quad planes");
        let got = model.run(&[incept_compiler::to_runtime(&input).expect("input")]).expect("run");
        assert_eq!(incept_compiler::from_runtime(&got[0]).expect("output").bytes(), want[0].bytes(), "{hw}x{hw}");
    }
}
