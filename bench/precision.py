#!/usr/bin/env python3
"""bf16 against f32: incept and OpenVINO in both precisions (and ONNX Runtime f32) on the same
models in the same run, alternating, with the error each bf16 run introduces; writes a table.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install -r bench/requirements.txt
    cargo build --release -p incept-compiler
    /tmp/venv/bin/python bench/precision.py --zoo DIR [--threads 1 2] [--rounds 5] [--iters 10] \
        [--write BENCHMARKS.md]

DIR holds the zoo models (bench/zoo/make_zoo.py: ResNet50, InceptionV3, Xception, MobileNetV2,
DenseNet121, those present) with their .input.npy and .ort_output.npy files. Per model and thread
count, each round runs `incept bench --json` in f32 and in bf16 (fresh processes), then ITERS
timed runs of ONNX Runtime (f32), OpenVINO with INFERENCE_PRECISION_HINT f32, and OpenVINO at its
default precision (bf16 on CPUs with AVX512-BF16 or AMX); medians and minimums are over all
rounds' samples. Errors are against ONNX Runtime's f32 output on the stored input:
max |y - y_ort| / max |y_ort|, and whether the top-1 class is the same; and (--seeds N, default 6)
the median of the same measure over N seeded standard-normal inputs on the logits (the model
without its final Softmax: the probabilities' error is set by the few largest classes).
"""

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import openvino as ov

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import cpu_name, git_rev, ort_session, time_ort, write_block  # noqa: E402

ZOO = ["ResNet50", "InceptionV3", "Xception", "MobileNetV2", "DenseNet121"]


def time_incept(incept, path, input_npy, threads, iters, precision):
    cmd = [incept, "bench", path, "--threads", str(threads), "--iters", str(iters), "--warmup", "3", "--json",
           "-i", input_npy, "--precision", precision]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"incept bench --precision {precision} failed on {path}:\n{res.stderr}")
    import json
    return json.loads(res.stdout)["samples_ms"]


def round_trip(incept):
    """A cache line's round trip between two threads (`incept peak --core-to-core`), in ns: a few
    hundred when the two CPUs share no L3, which slows every run at two threads."""
    res = subprocess.run([incept, "peak", "--core-to-core", "--runs", "5"], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"incept peak --core-to-core failed:\n{res.stderr}")
    import re
    return float(re.search(r"threads (\d+) ns", res.stdout).group(1))


def incept_output(incept, path, input_npy, precision):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "out.npy")
        cmd = [incept, "run", path, "-i", input_npy, "-o", out, "--precision", precision, "--threads", "1"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"incept run --precision {precision} failed on {path}:\n{res.stderr}")
        return np.load(out)


def ov_request(core, path, threads, precision):
    cfg = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if precision:
        cfg["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(path, "CPU", cfg)
    return compiled, compiled.create_infer_request()


def time_ov(req, x, iters):
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        req.infer({0: x})
        out.append((time.perf_counter() - t) * 1e3)
    return out


def logits_model(path, tmp):
    """The model with a final Softmax removed (its input becomes the output), or the model itself:
    errors in probabilities are dominated by the few largest ones, the logits show every class."""
    import onnx
    m = onnx.load(path)
    last = m.graph.node[-1]
    if last.op_type != "Softmax" or len(m.graph.output) != 1 or last.output[0] != m.graph.output[0].name:
        return path
    m.graph.node.remove(last)
    del m.graph.output[:]
    m.graph.output.append(onnx.helper.make_tensor_value_info(last.input[0], onnx.TensorProto.FLOAT, None))
    out = os.path.join(tmp, os.path.basename(path))
    onnx.save(m, out)
    return out


def seeded_errors(incept, core, path, seeds):
    """Median over `seeds` standard-normal inputs of the logits error of incept bf16 and of OpenVINO
    at its default precision, both against ONNX Runtime f32 on the same input."""
    with tempfile.TemporaryDirectory() as d:
        lp = logits_model(path, d)
        sess = ort_session(lp, 1)
        inp = sess.get_inputs()[0]
        _, req = ov_request(core, lp, 1, None)
        ours, theirs = [], []
        for seed in range(seeds):
            x = np.random.default_rng(seed).standard_normal(inp.shape).astype(np.float32)
            ref = sess.run(None, {inp.name: x})[0]
            xp = os.path.join(d, "x.npy")
            np.save(xp, x)
            ours.append(error(incept_output(incept, lp, xp, "bf16"), ref)[0])
            theirs.append(error(list(req.infer({0: x}).values())[0], ref)[0])
        return statistics.median(ours), statistics.median(theirs), sum(o <= t for o, t in zip(ours, theirs))


def error(y, ref):
    y, ref = np.asarray(y, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    return float(np.abs(y - ref).max() / np.abs(ref).max()), bool(y.argmax() == ref.argmax())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", required=True, help="folder with the zoo models from bench/zoo/make_zoo.py")
    ap.add_argument("--models", nargs="+", default=ZOO)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--incept", default=os.path.join(repo, "target", "release", "incept"))
    ap.add_argument("--write", help="also write the tables to this Markdown file")
    ap.add_argument("--seeds", type=int, default=6,
                    help="seeded random inputs for the logits error columns (0: leave them out)")
    a = ap.parse_args()
    core = ov.Core()
    models = [m for m in a.models if os.path.exists(os.path.join(a.zoo, f"{m}.onnx"))]
    if not models:
        sys.exit(f"none of {a.models} in {a.zoo}")

    speed, errors = [], []
    for name in models:
        path = os.path.join(a.zoo, f"{name}.onnx")
        input_npy = os.path.join(a.zoo, f"{name}.input.npy")
        x = np.load(input_npy)
        ref = np.load(os.path.join(a.zoo, f"{name}.ort_output.npy"))
        row = {"model": name}
        for p in ["f32", "bf16"]:
            row[f"incept {p}"] = error(incept_output(a.incept, path, input_npy, p), ref)
        for label, hint in [("OpenVINO f32", "f32"), ("OpenVINO default", None)]:
            compiled, req = ov_request(core, path, 1, hint)
            row[label] = error(list(req.infer({0: x}).values())[0], ref)
            row[f"{label} precision"] = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        if a.seeds:
            row["seeded"] = seeded_errors(a.incept, core, path, a.seeds)
        errors.append(row)
        print(f"{name} errors: {row}", file=sys.stderr)
        for threads in a.threads:
            sess = ort_session(path, threads)
            feed = {sess.get_inputs()[0].name: x}
            ovs = {label: ov_request(core, path, threads, hint)[1] for label, hint in [("f32", "f32"), ("default", None)]}
            time_ort(sess, feed, 3)
            for r in ovs.values():
                time_ov(r, x, 3)
            samples = {k: [] for k in ["incept f32", "incept bf16", "ORT f32", "OV f32", "OV default"]}
            trips = []
            for r in range(a.rounds):
                if threads > 1:
                    trips.append(round_trip(a.incept))
                for p in ["f32", "bf16"]:
                    samples[f"incept {p}"] += time_incept(a.incept, path, input_npy, threads, a.iters, p)
                    time.sleep(0.2)
                samples["ORT f32"] += time_ort(sess, feed, a.iters)
                time.sleep(0.2)
                samples["OV f32"] += time_ov(ovs["f32"], x, a.iters)
                time.sleep(0.2)
                samples["OV default"] += time_ov(ovs["default"], x, a.iters)
                time.sleep(0.2)
                med = {k: statistics.median(v[-a.iters:]) for k, v in samples.items()}
                print(f"{name} {threads}t round {r + 1}/{a.rounds}: " +
                      ", ".join(f"{k} {v:.1f}" for k, v in med.items()), file=sys.stderr)
            del sess, ovs
            stats = {k: (statistics.median(v), min(v)) for k, v in samples.items()}
            speed.append((name, threads, stats, f"{min(trips):.0f}-{max(trips):.0f}" if trips else ""))

    cols = ["incept f32", "incept bf16", "ORT f32", "OV f32", "OV default"]
    lines = [
        "| model | threads | " + " | ".join(f"{c} ms" for c in cols) + " | incept bf16 / OV default | core to core ns |",
        "|---|---|" + "---|" * len(cols) + "---|---|",
    ]
    for name, t, s, trip in speed:
        cells = " | ".join(f"{s[c][0]:.1f} ({s[c][1]:.1f})" for c in cols)
        lines.append(f"| {name} | {t} | {cells} | {s['incept bf16'][0] / s['OV default'][0]:.2f} | {trip} |")
    seeded = f" | logits error over {a.seeds} seeded inputs, median: incept bf16 / OpenVINO default (incept lower or equal)" if a.seeds else ""
    lines += [
        "",
        "| model | incept f32 error | incept bf16 error (top-1 same) | OpenVINO f32 error | OpenVINO default error (top-1 same), its precision"
        + seeded + " |",
        "|---|---|---|---|---|" + ("---|" if a.seeds else ""),
    ]
    for r in errors:
        cell = ""
        if a.seeds:
            o, t, wins = r["seeded"]
            cell = f" | {o:.1e} / {t:.1e} ({wins} of {a.seeds})"
        lines.append(
            f"| {r['model']} | {r['incept f32'][0]:.1e} | {r['incept bf16'][0]:.1e} ({'yes' if r['incept bf16'][1] else 'NO'}) "
            f"| {r['OpenVINO f32'][0]:.1e} | {r['OpenVINO default'][0]:.1e} ({'yes' if r['OpenVINO default'][1] else 'NO'}), "
            f"{r['OpenVINO default precision']}{cell} |"
        )
    table = "\n".join(lines)
    machine = f"{cpu_name()}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"
    meta = (
        f"Measured {datetime.date.today().isoformat()} on {machine}; incept {git_rev(repo)}, onnxruntime "
        f"{ort.__version__}, OpenVINO {ov.__version__}; batch 1, median (min) over {a.rounds} alternating rounds of "
        f"{a.iters} runs (core to core: the range of `incept peak --core-to-core` over the rounds at two threads); errors max |y - y_ORT f32| / max |y_ORT f32| on the stored input (the model's output, "
        f"softmax probabilities for these models) and, last column, on the logits (the model without its final "
        f"Softmax) over seeded standard-normal inputs."
    )
    print(table)
    print(meta)
    if a.write:
        cmd = "python3 bench/precision.py " + " ".join(sys.argv[1:])
        body = f"    {cmd}\n\n{table}\n\n{meta}"
        write_block(a.write, "precision", body, "# Benchmarks\n\n## bf16\n\nWritten by `bench/precision.py`:\n\n")


if __name__ == "__main__":
    main()
