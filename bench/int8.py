#!/usr/bin/env python3
"""int8 latency: incept against ONNX Runtime on the same quantized models, alternating.

For each model and form (the files bench/quantize.py writes: NAME.qdq.onnx, NAME.qdq_pc.onnx,
NAME.qop.onnx, beside NAME.input.npy), each round runs ONNX Runtime (CPUExecutionProvider, the
given intra-op threads, default graph optimisations) and then `incept bench` (QDQ forms with
`--precision int8`, which runs their groups as integer ops as ONNX Runtime does; `--fp` keeps
incept's default f32 reading instead), and prints the median and minimum ms of each, per round,
and the median over rounds.

    python bench/int8.py --zoo DIR [--models ResNet50 MobileNetV2] [--forms qop qdq] \
        [--threads 1] [--rounds 2] [--runs 20] [--incept target/release/incept]
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import numpy as np
import onnxruntime as ort


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
                rows.setdefault(key, {"ort": [], "incept": []})
                rows[key]["ort"].append(statistics.median(o))
                rows[key]["incept"].append(statistics.median(i))
                print(f"round {r}: {m}.{f}: incept median {statistics.median(i):.1f} min {min(i):.1f}, "
                      f"ORT median {statistics.median(o):.1f} min {min(o):.1f}", flush=True)
    print(f"\n| model | form | incept ms | ONNX Runtime ms | ratio |  ({a.threads} thread(s), medians over {a.rounds} rounds)")
    print("|---|---|---|---|---|")
    for (m, f), v in rows.items():
        i, o = statistics.median(v["incept"]), statistics.median(v["ort"])
        print(f"| {m} | {f} | {i:.1f} | {o:.1f} | {i / o:.2f} |")


if __name__ == "__main__":
    main()
