#!/usr/bin/env python3
"""Times incept and ONNX Runtime on the same models in the same run, alternating, and writes a table.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install -r bench/requirements.txt
    cargo build --release -p incept-compiler
    /tmp/venv/bin/python bench/compare.py --zoo DIR [--threads 1 2] [--rounds 5] [--iters 10] \
        [--write BENCHMARKS.md]

DIR holds ResNet50.onnx, InceptionV3.onnx, Xception.onnx, MobileNetV2.onnx (those present) and their .input.npy files, as written by
bench/zoo/make_zoo.py (or pass models with --model PATH, repeatable). For each model and thread
count, each round runs `incept bench --json` (a fresh process: compile, warm up, ITERS timed runs)
and then ITERS timed runs of one ONNX Runtime session (created once, warmed up); the medians are
over all rounds' samples, and the ratio is incept / ORT (below 1: incept is faster). Batch 1, the
stored input of each model.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

ZOO = ["ResNet50", "InceptionV3", "Xception", "MobileNetV2"]


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_rev(repo):
    try:
        return subprocess.check_output(["git", "-C", repo, "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def ort_session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def time_ort(sess, feed, iters):
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, feed)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def time_incept(incept, path, input_npy, threads, iters):
    cmd = [incept, "bench", path, "--threads", str(threads), "--iters", str(iters), "--warmup", "3", "--json"]
    if input_npy:
        cmd += ["-i", input_npy]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"incept bench failed on {path}:\n{res.stderr}")
    j = json.loads(res.stdout)
    return j["samples_ms"], j["compile_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", help="folder with the zoo models from make_zoo.py")
    ap.add_argument("--model", action="append", default=[], help="an ONNX model (repeatable)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--incept", default=os.path.join(repo, "target", "release", "incept"))
    ap.add_argument("--write", help="also write the table to this Markdown file")
    a = ap.parse_args()

    models = list(a.model)
    if a.zoo:
        models += [os.path.join(a.zoo, f"{m}.onnx") for m in ZOO if os.path.exists(os.path.join(a.zoo, f"{m}.onnx"))]
    if not models:
        sys.exit("no models: give --zoo DIR or --model PATH")
    if not os.path.exists(a.incept):
        sys.exit(f"{a.incept} not found: cargo build --release -p incept-compiler")

    rows = []
    for path in models:
        name = os.path.splitext(os.path.basename(path))[0]
        input_npy = os.path.splitext(path)[0] + ".input.npy"
        for threads in a.threads:
            sess = ort_session(path, threads)
            inp = sess.get_inputs()[0]
            if os.path.exists(input_npy):
                x = np.load(input_npy)
            else:
                input_npy = None
                shape = [d if isinstance(d, int) else 1 for d in inp.shape]
                x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
            feed = {inp.name: x}
            time_ort(sess, feed, 3)
            inc, ref, compile_s = [], [], []
            for r in range(a.rounds):
                s, c = time_incept(a.incept, path, input_npy, threads, a.iters)
                inc += s
                compile_s.append(c)
                time.sleep(0.2)
                ref += time_ort(sess, feed, a.iters)
                time.sleep(0.2)
                print(f"{name} {threads}t round {r + 1}/{a.rounds}: incept {statistics.median(s):.1f} ms, "
                      f"ORT {statistics.median(ref[-a.iters:]):.1f} ms", file=sys.stderr)
            del sess
            mi, mo = statistics.median(inc), statistics.median(ref)
            rows.append((name, threads, mi, min(inc), mo, min(ref), mi / mo, statistics.median(compile_s)))

    lines = [
        "| model | threads | incept median (min) ms | ORT median (min) ms | incept / ORT | incept compile s |",
        "|---|---|---|---|---|---|",
    ]
    for name, t, mi, ni, mo, no, ratio, cs in rows:
        lines.append(f"| {name} | {t} | {mi:.1f} ({ni:.1f}) | {mo:.1f} ({no:.1f}) | {ratio:.2f} | {cs:.2f} |")
    table = "\n".join(lines)
    machine = f"{cpu_name()}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"
    meta = (
        f"Measured {datetime.date.today().isoformat()} on {machine}; incept {git_rev(repo)}, "
        f"onnxruntime {ort.__version__}; batch 1, {a.rounds} alternating rounds of {a.iters} runs each."
    )
    print(table)
    print(meta)
    if a.write:
        cmd = "python3 bench/compare.py " + " ".join(sys.argv[1:])
        intro = ("# Benchmarks\n\nBatch-1 latency of incept against ONNX Runtime on the same machine in the "
                 "same run (alternating), written by `bench/compare.py`:\n\n")
        write_block(a.write, "compare", f"    {cmd}\n\n{table}\n\n{meta}", intro)


def write_block(path, marker, body, intro):
    """Puts `body` between `<!-- marker:start -->` and `<!-- marker:end -->` in the Markdown file
    `path`, replacing what was there and keeping the rest; appends it (after `intro` in a new file,
    or at the end) when the markers are missing."""
    start_tag, end_tag = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    block = f"{start_tag}\n{body}\n{end_tag}"
    text = open(path).read() if os.path.exists(path) else ""
    start, end = text.find(start_tag), text.find(end_tag)
    if start >= 0 and end > start:
        text = text[:start] + block + text[end + len(end_tag):]
    elif text:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        text = intro + block + "\n"
    with open(path, "w") as f:
        f.write(text)

if __name__ == "__main__":
    main()
