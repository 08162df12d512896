#!/usr/bin/env python3
"""Where incept loses to ONNX Runtime, layer by layer, on one model at one thread.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install -r bench/requirements.txt
    cargo build --release -p incept-compiler
    /tmp/venv/bin/python bench/compare_layers.py MODEL.onnx [--top 30] [--runs 40]

ONNX Runtime's own profiler (`enable_profiling`) gives each of its kernels' time per run; `incept bench
--profile` gives each step's. ORT names a fused node after the value it writes (`<value>_nchwc` for its
blocked-layout convs), incept after the ONNX node that computes it, so each ORT entry is charged to the
Conv whose output its value is (through a following Relu, Clip or Add). Both sides are summed per ONNX
node and the nodes are printed by how much more time incept takes (then the ones where it takes less).
incept's numbers include the profiler's per-step timing overhead (a few percent); ORT's are the 25th
percentile of its runs. Read it for where the gap is, not for the model's latency (use compare.py).
"""

import argparse
import collections
import json
import os
import re
import subprocess

import numpy as np
import onnx
import onnxruntime as ort

STEP = re.compile(r"(\S+)\s+(\S+)\s+([\d.]+)\s+([\d.]+)%\s+(\S+)\s+(.*)")


def ort_times(path, runs):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.enable_profiling = True
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(runs):
        sess.run(None, {inp.name: x})
    trace = sess.end_profiling()
    with open(trace) as f:
        events = json.load(f)
    os.remove(trace)
    per = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per[e["name"][: -len("_kernel_time")]].append(e["dur"])
    return {name: sorted(d)[len(d) // 4] / 1000 for name, d in per.items()}


def owners(path):
    """The ONNX node each value is charged to: its producer, or the Conv that an elementwise
    epilogue node (Relu, Clip, Add) follows."""
    model = onnx.load(path, load_external_data=False)
    producer = {o: n for n in model.graph.node for o in n.output}
    owner = {}
    for n in model.graph.node:
        if n.op_type in ("Relu", "Clip", "Add"):
            convs = [producer[i] for i in n.input if i in producer and producer[i].op_type == "Conv"]
            if convs:
                owner[n.output[0]] = convs[0].name
    for n in model.graph.node:
        for o in n.output:
            owner.setdefault(o, n.name)
    return owner


def incept_times(incept, path, runs):
    out = subprocess.run(
        [incept, "bench", path, "--threads", "1", "--iters", str(runs), "--profile", "--top", "100000"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    times = collections.defaultdict(float)
    kernels = {}
    for line in out.splitlines():
        m = STEP.match(line)
        if m:
            times[m.group(1)] += float(m.group(3))
            kernels.setdefault(m.group(1), m.group(6).strip())
    latency = next((line for line in out.splitlines() if line.startswith("latency")), "")
    return times, kernels, latency


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--incept", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "incept"))
    ap.add_argument("--top", type=int, default=30, help="nodes to list where incept is slower (default 30)")
    ap.add_argument("--runs", type=int, default=40, help="profiled runs on each side (default 40)")
    args = ap.parse_args()
    owner = owners(args.model)
    ort_node = collections.defaultdict(float)
    for name, ms in ort_times(args.model, args.runs).items():
        value = name[: -len("_nchwc")] if name.endswith("_nchwc") else name
        ort_node[owner.get(value, value)] += ms
    inc, kernels, latency = incept_times(args.incept, args.model, args.runs)
    print(f"incept: {latency}")
    print(f"summed step time: incept {sum(inc.values()):.2f} ms, ORT {sum(ort_node.values()):.2f} ms")
    rows = sorted(set(inc) | set(ort_node), key=lambda n: ort_node.get(n, 0) - inc.get(n, 0))
    fmt = "{:+8.3f}  {:<44} incept {:7.3f}  ORT {:7.3f}  {}"
    for n in rows[: args.top]:
        print(fmt.format(inc.get(n, 0) - ort_node.get(n, 0), n[:44], inc.get(n, 0), ort_node.get(n, 0), kernels.get(n, "")))
    print("...")
    for n in rows[-10:]:
        print(fmt.format(inc.get(n, 0) - ort_node.get(n, 0), n[:44], inc.get(n, 0), ort_node.get(n, 0), kernels.get(n, "")))


if __name__ == "__main__":
    main()
