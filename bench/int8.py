#!/usr/bin/env python3
"""int8 latency: incept against ONNX Runtime on the same quantized models, alternating.

For each model and form (the files bench/quantize.py writes: NAME.qdq.onnx, NAME.qdq_pc.onnx,
NAME.qop.onnx, beside NAME.input.npy), each round runs ONNX Runtime (CPUExecutionProvider, the
given intra-op threads, default graph optimisations) and then `incept bench` (QDQ forms with
`--precision int8`, which runs their groups as integer ops as ONNX Runtime does; `--fp` keeps
incept's default f32 reading instead), and prints the median and minimum ms of each, per round,
and the median over rounds; with --openvino also OpenVINO on the QDQ forms (its default
precision and the given threads, PERFORMANCE_HINT LATENCY: it runs a QDQ model's groups in
int8 itself; it refuses the QOperator files, whose com.microsoft ops it lacks). Then, per
model and form, how far incept's output is from ONNX
Runtime's on the same input, in quantisation steps of the output (the scale of the graph's last
DequantizeLinear): from ORT as it runs by default, from ORT running the graph as written (graph
optimisations off: every QDQ pair in f32, the ONNX definition), and ORT's two runs from each other
(its fused integer kernels round differently from the graph as written); and whether the top-1
classes agree.

    python bench/int8.py --zoo DIR [--models ResNet50 MobileNetV2] [--forms qop qdq] \
        [--threads 1] [--rounds 2] [--runs 20] [--incept target/release/incept] [--openvino]
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import tempfile

import numpy as np
import onnx
import onnxruntime as ort


def output_step(path):
    """The scale of the DequantizeLinear that makes the graph's output (None if another op does)."""
    g = onnx.load(path, load_external_data=False).graph
    made_by = {o: n for n in g.node for o in n.output}
    n = made_by.get(g.output[0].name)
    if n is None or n.op_type != "DequantizeLinear":
        return None
    init = {t.name: t for t in g.initializer}
    return float(onnx.numpy_helper.to_array(init[n.input[1]]).reshape(-1)[0])


def ort_output(path, x, level):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0].astype(np.float64)


def agreement(binary, path, inp, x, int8):
    """Distances in output steps (largest over the output) of incept from ONNX Runtime as it
    runs by default, of incept from ONNX Runtime running the graph as written (no graph
    optimisations: each QDQ pair in f32, as ONNX defines it), and of the two ONNX Runtimes from
    each other; and whether incept's top-1 classes equal ORT's."""
    want = ort_output(path, x, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    literal = ort_output(path, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "out.npy")
        cmd = [binary, "run", path, "-i", inp, "-o", out]
        if int8:
            cmd += ["--precision", "int8"]
        subprocess.run(cmd, check=True, capture_output=True)
        got = np.load(out).astype(np.float64)
    step = output_step(path)
    dist = lambda a, b: float(np.abs(a - b).max()) / step if step else float("nan")
    top = lambda v: v.reshape(v.shape[0], -1).argmax(1)
    return (dist(got, want), dist(got, literal), dist(want, literal)), bool((top(got) == top(want)).all())


def ort_times(path, x, threads, runs):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    for _ in range(5):
        s.run(None, {name: x})
    t = []
    for _ in range(runs):
        a = time.perf_counter()
        s.run(None, {name: x})
        t.append((time.perf_counter() - a) * 1e3)
    return t


def ov_times(path, x, threads, runs):
    import openvino as ov
    cfg = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    req = ov.Core().compile_model(path, "CPU", cfg).create_infer_request()
    for _ in range(5):
        req.infer({0: x})
    t = []
    for _ in range(runs):
        a = time.perf_counter()
        req.infer({0: x})
        t.append((time.perf_counter() - a) * 1e3)
    return t


def incept_times(binary, path, inp, threads, runs, int8):
    cmd = [binary, "bench", path, "-i", inp, "--threads", str(threads), "--iters", str(runs), "--json"]
    if int8:
        cmd += ["--precision", "int8"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["samples_ms"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoo", required=True)
    p.add_argument("--models", nargs="+", default=["ResNet50", "MobileNetV2", "InceptionV3"])
    p.add_argument("--forms", nargs="+", default=["qop", "qdq", "qdq_pc"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--incept", default="target/release/incept")
    p.add_argument("--fp", action="store_true", help="QDQ forms in incept's default f32 reading")
    p.add_argument("--openvino", action="store_true", help="also time OpenVINO on the QDQ forms")
    a = p.parse_args()
    rows = {}
    for r in range(a.rounds):
        for m in a.models:
            inp = os.path.join(a.zoo, f"{m}.input.npy")
            x = np.load(inp)
            for f in a.forms:
                path = os.path.join(a.zoo, f"{m}.{f}.onnx")
                if not os.path.exists(path):
                    continue
                o = ort_times(path, x, a.threads, a.runs)
                i = incept_times(a.incept, path, inp, a.threads, a.runs, f != "qop" and not a.fp)
                key = (m, f)
                if key not in rows:
                    steps, top1 = agreement(a.incept, path, inp, x, f != "qop" and not a.fp)
                    rows[key] = {"ort": [], "incept": [], "ov": [], "steps": steps, "top1": top1}
                rows[key]["ort"].append(statistics.median(o))
                rows[key]["incept"].append(statistics.median(i))
                if a.openvino and f != "qop":
                    rows[key]["ov"].append(statistics.median(ov_times(path, x, a.threads, a.runs)))
                print(f"round {r}: {m}.{f}: incept median {statistics.median(i):.1f} min {min(i):.1f}, "
                      f"ORT median {statistics.median(o):.1f} min {min(o):.1f}", flush=True)
    print(f"\n| model | form | incept ms | ONNX Runtime ms | ratio | OpenVINO ms | steps from ORT "
          f"(as written; ORT from itself) | top-1 |  ({a.threads} thread(s), medians over {a.rounds} rounds)")
    print("|---|---|---|---|---|---|---|---|")
    for (m, f), v in rows.items():
        i, o = statistics.median(v["incept"]), statistics.median(v["ort"])
        ov_ms = f"{statistics.median(v['ov']):.1f}" if v["ov"] else "-"
        top1 = "equal" if v["top1"] else "DIFFERENT"
        by_default, as_written, ort_itself = v["steps"]
        steps = f"{by_default:.0f} ({as_written:.0f}; {ort_itself:.0f})"
        print(f"| {m} | {f} | {i:.1f} | {o:.1f} | {i / o:.2f} | {ov_ms} | {steps} | {top1} |")


if __name__ == "__main__":
    main()
