#!/usr/bin/env python3
"""Quantize f32 ONNX models to int8 with ONNX Runtime's static quantizer, the way users do.

Purpose: int8 test and benchmark models for incept. For each f32 model NAME.onnx this runs
onnxruntime.quantization.quantize_static in three forms (choose with --forms):

  qdq     QDQ format, QInt8 activations, QInt8 weights, per_channel=False
          (quantize_static's defaults)
  qdq_pc  QDQ format, QInt8 activations, QInt8 weights, per_channel=True
  qop     QOperator format (QLinearConv, com.microsoft QLinearAdd, ...), QUInt8 activations,
          QInt8 weights, per_channel=True

Everything else is quantize_static's default: all op types it knows are quantized,
reduce_range=False, no extra_options. Calibration is MinMax over N (--calib-n, default 8)
inputs drawn by a CalibrationDataReader from np.random.default_rng(--seed, default 20261207):
N draws of standard_normal(shape) in turn, each cast to float32, where shape is the model's
input shape (a symbolic dimension takes its size from NAME.input.npy, else 1). The same N
inputs serve every model of that shape and every form; they are not NAME.input.npy.

No quant_pre_process. ONNX Runtime recommends it (quantize_static logs "Please consider to run
pre-processing", filtered out here), but these models (the tf2onnx zoo and fixtures) do not
need it to quantize correctly: their shapes are all static and quantize_static runs ONNX
shape inference itself, so every float tensor gets a calibrated range, no op is left in f32,
every form runs in ONNX Runtime, and in its logits the f32 top-1 class comes first or second
(ResNet50, MobileNetV2, InceptionV3 and the five mini_* fixtures). What it would add is
an ONNX Runtime "basic" optimization pass that rewrites the graph first (folds the Mul + Add
that tf2onnx leaves for a BatchNorm after a biased or depthwise Conv into that Conv, folds
constants) and stamps the output with every domain ORT knows in opset_import
(ai.onnx.training, com.microsoft.nchwc, org.pytorch.aten, ...): the int8 graph would then no
longer be the exported graph quantized. Its effect on error is mixed (max logits error on
the fixtures, without -> with: mini_resnet qdq_pc and qop 0.063 -> 0.015, mini_mobilenetv2
qdq_pc and qop 0.90 -> 0.99, mini_xception unchanged). Its symbolic shape
inference also needs sympy, which is not in bench/requirements.txt. --preprocess runs it
(skip_symbolic_shape=True) for such comparisons; its outputs are not the reference ones.

Usage (in the venv of bench/requirements.txt):

  python bench/quantize.py --zoo DIR [--models ResNet50 MobileNetV2 ...]
      every DIR/NAME.onnx that has a DIR/NAME.input.npy and is not itself a quantized output
      (NAME.qdq.onnx, NAME.qdq_pc.onnx, NAME.qop.onnx); outputs go beside it in DIR.
  python bench/quantize.py --fixtures DIR OUTDIR [--models mini_resnet ...]
      the same for the small fixture models in DIR, writing into OUTDIR (created).
  common options: --forms qdq qdq_pc qop   --calib-n 8   --seed 20261207   --runs 20

What it writes, for each model NAME and form FORM:
  NAME.FORM.onnx             the quantized model (opset and domains as quantize_static set them)
  NAME.FORM.ort_output.npy   ONNX Runtime's output (CPUExecutionProvider, default session
                             options) on NAME.input.npy (NAME.FORM.ort_output_K.npy for output K
                             if a model had several)
  NAME.FORM.meta.json        the settings, the input it was run on (path relative to the output
                             folder and sha256; with --fixtures this points back into DIR and the
                             input is not copied), the f32 model's sha256, opset_import, the op
                             histogram by domain, the ops quantize_static left in f32, and the
                             agreement with NAME.ort_output.npy (f32 ORT output)

and prints, per model and form: the quantized graph's op types by domain; the nodes that still
compute in f32 (in QDQ: a node not fed only by DequantizeLinear or not feeding only
QuantizeLinear; in QOperator: a node other than DequantizeLinear with a float output); the op
types of the graph ONNX Runtime actually runs after its own optimizations (its QDQ fusions make
QLinearConv etc. from DQ -> Conv -> Q); ONNX Runtime's latency (median of --runs runs after 2
warm-up runs, intra- and inter-op threads 1, batch 1, NAME.input.npy); and top-1 and max-abs
difference of the first output against NAME.ort_output.npy. The f32 model's latency is printed
for reference. Where the model ends in Softmax the output is a quantized softmax (quantize_static
fixes its range to [0, 1], so 8 bits give steps of 1/255 or 1/256): a 1000-class model with
random weights has only a few distinct output values and its top-1 is often a tie, which is
printed as such. So the same comparison is also printed, and stored, for the logits: the
(dequantized) input of the last Softmax / com.microsoft QLinearSoftmax against the f32
Softmax input.

Known quantize_static behaviour these files keep (it is what users get): in QOperator format
a Relu or Clip that follows a quantized op is always removed, its output taking the input's
quantization, but the input's range is narrowed to the Relu's output range only when the Relu
is the input's single consumer. A Relu whose input also feeds another node (Xception's middle
flow: Add -> Relu -> separable conv, and the same Add -> the residual Add) is thus dropped
without clamping: mini_xception.qop computes a different function (its output is 0.026 from
the f32 model without that Relu, 0.099 from the f32 model). QDQ keeps such a Relu.

Determinism: the .onnx, .npy and .meta.json files are the same from run to run on one machine
(checked by sha256 over runs in separate processes, so with different PYTHONHASHSEEDs).
Calibration runs ONNX Runtime with its default thread count, so a machine with another core
count or other CPU kernels could get ranges differing in the last bits, hence other scales.
"""

import argparse
import collections
import hashlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

FORMS = {
    "qdq": dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8, per_channel=False),
    "qdq_pc": dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                   weight_type=QuantType.QInt8, per_channel=True),
    "qop": dict(quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, per_channel=True),
}
DEFAULT_SEED = 20261207
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
               onnx.TensorProto.BFLOAT16}


class _DropPreprocessAdvice(logging.Filter):
    """quantize_static logs this advice twice per call; the choice is explained above."""

    def filter(self, record):
        return "pre-processing" not in record.getMessage()


logging.getLogger().addFilter(_DropPreprocessAdvice())


class SeededReader(CalibrationDataReader):
    """N seeded standard-normal float32 inputs for the model's single input."""

    def __init__(self, input_name, shape, n, seed):
        rng = np.random.default_rng(seed)
        self.data = [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]
        self.name = input_name
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.data):
            return None
        self.pos += 1
        return {self.name: self.data[self.pos - 1]}

    def rewind(self):
        self.pos = 0

    def __len__(self):
        return len(self.data)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rel_to(path, base):
    return os.path.relpath(Path(path).resolve(), Path(base).resolve())


def is_quantized_output(path):
    return any(path.name.endswith(f".{form}.onnx") for form in FORMS)


def find_models(folder, wanted):
    models = {}
    for p in sorted(folder.glob("*.onnx")):
        if is_quantized_output(p):
            continue
        name = p.name[: -len(".onnx")]
        if wanted and name not in wanted:
            continue
        if not (folder / f"{name}.input.npy").exists():
            print(f"[skip] {p}: no {name}.input.npy beside it")
            continue
        models[name] = p
    missing = [w for w in wanted or [] if w not in models]
    if missing:
        sys.exit(f"not found in {folder} (with an .input.npy): {', '.join(missing)}")
    return models


def calib_shape(model, x):
    """The model's input shape, a symbolic dimension taking its size from NAME.input.npy."""
    inp = model.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    shape = []
    for k, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(d.dim_value)
        else:
            shape.append(x.shape[k] if k < x.ndim else 1)
    return inp.name, tuple(shape)


def op_histogram(model):
    """{domain: {op_type: count}}, domains and ops sorted; '' is written ai.onnx."""
    c = collections.Counter((n.domain or "ai.onnx", n.op_type) for n in model.graph.node)
    out = {}
    for (dom, op), k in sorted(c.items()):
        out.setdefault(dom, {})[op] = k
    return out


def format_hist(hist):
    return "; ".join(f"{dom}: " + ", ".join(f"{op} {k}" for op, k in ops.items())
                     for dom, ops in hist.items())


def tensor_types(path):
    """Element type of every tensor of the model, as ONNX Runtime infers them: a copy with every
    node output made a graph output (no type given) is loaded without optimizations, and its
    outputs' types read back. Works for com.microsoft ops, which onnx's shape inference lacks."""
    m = onnx.load(str(path))
    known = {o.name for o in m.graph.output}
    for n in m.graph.node:
        for o in n.output:
            if o and o not in known:
                m.graph.output.append(onnx.ValueInfoProto(name=o))
                known.add(o)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    types = {}
    for v in list(sess.get_inputs()) + list(sess.get_outputs()):
        types[v.name] = v.type  # e.g. 'tensor(float)'
    for t in m.graph.initializer:
        types[t.name] = "tensor(float)" if t.data_type in FLOAT_TYPES else f"tensor({t.data_type})"
    return types


def float_nodes(path, fmt):
    """Nodes quantize_static left computing in f32, as 'op_type (domain)' -> count."""
    m = onnx.load(str(path))
    types = tensor_types(path)
    is_float = lambda t: types.get(t, "").startswith(("tensor(float", "tensor(double", "tensor(bfloat"))
    producer = {o: n for n in m.graph.node for o in n.output}
    consumers = collections.defaultdict(list)
    for n in m.graph.node:
        for x in n.input:
            consumers[x].append(n)
    graph_outputs = {o.name for o in m.graph.output}
    left = collections.Counter()
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.op_type == "Constant":
            continue
        if fmt == "QDQ":
            ins_ok = all(not x or not is_float(x)
                         or (x in producer and producer[x].op_type == "DequantizeLinear")
                         for x in n.input)
            outs_ok = all(o not in graph_outputs and consumers[o]
                          and all(c.op_type == "QuantizeLinear" for c in consumers[o])
                          for o in n.output if o and is_float(o))
            f32 = not (ins_ok and outs_ok)
        else:
            f32 = any(o and is_float(o) for o in n.output)
        if f32:
            left[f"{n.op_type} ({n.domain or 'ai.onnx'})"] += 1
    return dict(sorted(left.items()))


def ort_outputs(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def latency_and_runtime_ops(path, x, runs):
    """Median latency in ms at one thread, and the op histogram of the graph ORT runs."""
    with tempfile.TemporaryDirectory(prefix="quantize.") as d:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.optimized_model_filepath = os.path.join(d, "optimized.onnx")
        so.log_severity_level = 3  # the saved graph has layout-specific ops: a warning
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}
        for _ in range(2):
            sess.run(None, feed)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            sess.run(None, feed)
            times.append((time.perf_counter() - t) * 1e3)
        hist = op_histogram(onnx.load(so.optimized_model_filepath))
    return statistics.median(times), hist


def compare(y, r):
    """Top-1 and max-abs difference of a quantized output y against the f32 one r (batch 1)."""
    y, r = np.asarray(y, np.float64).ravel(), np.asarray(r, np.float64).ravel()
    top_q, top_f = int(y.argmax()), int(r.argmax())
    return {
        "top1_f32": top_f,
        "top1_quant": top_q,
        "top1_equal": top_q == top_f,
        # a quantized softmax has few distinct values: the f32 top-1 may tie with others
        "quant_classes_at_max": int((y == y.max()).sum()),
        "f32_top1_rank_in_quant": 1 + int((y > y[top_f]).sum()),
        "quant_distinct_values": int(np.unique(y).size),
        "max_abs_diff": float(np.max(np.abs(y - r))),
        "max_abs_f32": float(np.max(np.abs(r))),
    }


def format_compare(c):
    if c["top1_equal"]:
        top = "same"
    elif c["f32_top1_rank_in_quant"] == 1:
        top = f"tie: the f32 top-1 is one of {c['quant_classes_at_max']} classes at the quantized maximum"
    else:
        top = f"DIFFERENT: the f32 top-1 ranks {c['f32_top1_rank_in_quant']} in the quantized output"
    return (f"top-1 {c['top1_quant']} vs f32 {c['top1_f32']}: {top}; max|q - f32| = "
            f"{c['max_abs_diff']:.3e} (max|f32| {c['max_abs_f32']:.3e}); "
            f"{c['quant_distinct_values']} distinct values")


def softmax_input(path, x):
    """ORT's value (dequantized if need be) of the input of the model's last Softmax or
    com.microsoft QLinearSoftmax, i.e. the logits, or None if the model has no Softmax."""
    m = onnx.load(str(path))
    sm = [n for n in m.graph.node if n.op_type in ("Softmax", "QLinearSoftmax")]
    if not sm:
        return None
    n = sm[-1]
    if n.op_type == "Softmax":
        name = n.input[0]
    else:  # inputs X, X_scale, X_zero_point, Y_scale, Y_zero_point
        name = n.input[0] + "_logits_dequantized"
        m.graph.node.append(onnx.helper.make_node("DequantizeLinear", list(n.input[:3]), [name]))
    m.graph.output.append(onnx.ValueInfoProto(name=name))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run([name], {sess.get_inputs()[0].name: x})[0]


def preprocess(src, dst):
    from onnxruntime.quantization.shape_inference import quant_pre_process
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def quantize_one(name, src, out_dir, forms, a):
    x = np.load(src.parent / f"{name}.input.npy")
    n_out = len(onnx.load(str(src), load_external_data=False).graph.output)
    if n_out == 1:
        refs = [np.load(src.parent / f"{name}.ort_output.npy")]
    else:
        refs = [np.load(src.parent / f"{name}.ort_output_{k}.npy") for k in range(n_out)]
    f32_ms, _ = latency_and_runtime_ops(src, x, a.runs)
    f32_logits = softmax_input(src, x)
    f32_err = max(float(np.max(np.abs(y - r))) for y, r in zip(ort_outputs(src, x), refs))
    print(f"== {name} ({src}, {src.stat().st_size / 1e6:.2f} MB)")
    print(f"   f32: ORT {f32_ms:.2f} ms (1 thread, median of {a.runs}); "
          f"max|ORT now - {name}.ort_output.npy| = {f32_err:.1e}")
    m_src = onnx.load(str(src), load_external_data=False)
    input_name, shape = calib_shape(m_src, x)
    with tempfile.TemporaryDirectory(prefix="quantize.") as d:
        model_in = src
        if a.preprocess:
            model_in = Path(d) / "pre.onnx"
            preprocess(src, model_in)
        for form in forms:
            cfg = FORMS[form]
            dst = out_dir / f"{name}.{form}.onnx"
            tmp = out_dir / f"{name}.{form}.onnx.tmp"
            reader = SeededReader(input_name, shape, a.calib_n, a.seed)
            t = time.time()
            quantize_static(str(model_in), str(tmp), calibration_data_reader=reader,
                            calibrate_method=CalibrationMethod.MinMax, **cfg)
            tmp.replace(dst)
            qsec = time.time() - t
            m = onnx.load(str(dst))
            hist = op_histogram(m)
            fmt = "QDQ" if cfg["quant_format"] == QuantFormat.QDQ else "QOperator"
            left = float_nodes(dst, fmt)
            ys = ort_outputs(dst, x)
            out_files = ([out_dir / f"{name}.{form}.ort_output.npy"] if len(ys) == 1 else
                         [out_dir / f"{name}.{form}.ort_output_{k}.npy" for k in range(len(ys))])
            for p, y in zip(out_files, ys):
                np.save(p, y)
            agr = {"output": compare(ys[0], refs[0])}
            if f32_logits is not None:
                agr["logits"] = compare(softmax_input(dst, x), f32_logits)
            ms, run_ops = latency_and_runtime_ops(dst, x, a.runs)
            opsets = {(o.domain or "ai.onnx"): o.version for o in m.opset_import}
            meta = {
                "model": name,
                "form": form,
                "source_model": rel_to(src, out_dir),
                "source_sha256": sha256(src),
                "input": rel_to(src.parent / f"{name}.input.npy", out_dir),
                "input_sha256": sha256(src.parent / f"{name}.input.npy"),
                "f32_ort_output": rel_to(src.parent / f"{name}.ort_output.npy", out_dir),
                "quantize_static": {
                    "quant_format": fmt,
                    "activation_type": cfg["activation_type"].name,
                    "weight_type": cfg["weight_type"].name,
                    "per_channel": cfg["per_channel"],
                    "calibrate_method": "MinMax",
                    "calibration_inputs": f"{a.calib_n} x np.random.default_rng({a.seed})"
                                          f".standard_normal({list(shape)}).astype(float32)",
                    "quant_pre_process": bool(a.preprocess),
                    "other_arguments": "defaults",
                },
                "opset_import": opsets,
                "op_histogram": hist,
                "ops_left_in_f32": left,
                "agreement_with_f32_ort_output": agr,
                "versions": {mod.__name__: mod.__version__ for mod in (ort, onnx, np)},
            }
            (out_dir / f"{name}.{form}.meta.json").write_text(json.dumps(meta, indent=1) + "\n")
            size = dst.stat().st_size
            print(f"-- {name} {form}: {fmt}, act {cfg['activation_type'].name}, weight "
                  f"{cfg['weight_type'].name}, per_channel {cfg['per_channel']}; "
                  f"{dst} {size / 1e6:.2f} MB, opset {opsets}, quantized in {qsec:.1f} s")
            print(f"   ops: {format_hist(hist)}")
            print(f"   left in f32: {', '.join(f'{k} {v}' for k, v in left.items()) or 'none'}")
            print(f"   ORT runs: {format_hist(run_ops)}")
            print(f"   ORT {ms:.2f} ms (1 thread, median of {a.runs}; f32 {f32_ms:.2f} ms, "
                  f"f32/int8 {f32_ms / ms:.2f})")
            print(f"   output: {format_compare(agr['output'])}")
            if "logits" in agr:
                print(f"   logits (Softmax input): {format_compare(agr['logits'])}")
            sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--zoo", type=Path, metavar="DIR",
                       help="quantize the models in DIR, writing beside them")
    where.add_argument("--fixtures", type=Path, nargs=2, metavar=("DIR", "OUTDIR"),
                       help="quantize the models in DIR, writing into OUTDIR")
    ap.add_argument("--models", nargs="+", metavar="NAME", help="only these models (default: all)")
    ap.add_argument("--forms", nargs="+", choices=list(FORMS), default=list(FORMS))
    ap.add_argument("--calib-n", type=int, default=8, help="calibration inputs (default 8)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED,
                    help=f"calibration seed (default {DEFAULT_SEED})")
    ap.add_argument("--runs", type=int, default=20, help="timed runs (default 20)")
    ap.add_argument("--preprocess", action="store_true",
                    help="run quant_pre_process first (not the default; see above)")
    a = ap.parse_args()
    if a.zoo:
        src_dir, out_dir = a.zoo, a.zoo
    else:
        src_dir, out_dir = a.fixtures
        out_dir.mkdir(parents=True, exist_ok=True)
    models = find_models(src_dir, a.models)
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, numpy {np.__version__}; "
          f"forms {a.forms}; MinMax over {a.calib_n} inputs, seed {a.seed}; "
          f"quant_pre_process {'yes' if a.preprocess else 'no'}")
    for name, src in models.items():
        quantize_one(name, src, out_dir, a.forms, a)


if __name__ == "__main__":
    main()
