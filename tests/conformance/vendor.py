#!/usr/bin/env python3
"""Regenerates the vendored ONNX backend test cases that incept's conformance test runs.

Copies, from the `onnx` wheel 1.22.0 (the last one that ships onnx/backend/test/data/node/),
every node, pytorch-converted and pytorch-operator test whose model uses only ops incept
supports (the list comes from `incept ops`). Data only: model.onnx and test_data_set_*/.

    python3 -m venv /tmp/onnx-venv && /tmp/onnx-venv/bin/pip install onnx==1.22.0 numpy
    /tmp/onnx-venv/bin/python tests/conformance/vendor.py

Run from the repository root (INCEPT_BIN=target/release/incept uses that binary for the op
list instead of `cargo run`). It rewrites tests/conformance/data/ and MANIFEST.txt.
"""
import os
import shutil
import subprocess
import sys

import onnx

ONNX_VERSION = "1.22.0"
SUITES = ["node", "pytorch-converted", "pytorch-operator"]


def supported_ops(root):
    # INCEPT_BIN: an already built `incept` (saves a debug build of the compiler).
    cmd = [os.environ["INCEPT_BIN"]] if "INCEPT_BIN" in os.environ else ["cargo", "run", "-q", "-p", "incept-compiler", "--"]
    out = subprocess.run(cmd + ["ops"], cwd=root, check=True, capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def op_types(model):
    ops = set()
    for n in model.graph.node:
        ops.add((n.domain, n.op_type))
    local = {(f.domain, f.name) for f in model.functions}
    for f in model.functions:
        for n in f.node:
            ops.add((n.domain, n.op_type))
    return {o for o in ops if o not in local}


def main():
    if onnx.__version__ != ONNX_VERSION:
        sys.exit(f"needs onnx=={ONNX_VERSION}, found {onnx.__version__}")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    supported = supported_ops(root)
    src_root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    dst_root = os.path.join(root, "tests", "conformance", "data")
    shutil.rmtree(dst_root, ignore_errors=True)
    manifest = []
    for suite in SUITES:
        for case in sorted(os.listdir(os.path.join(src_root, suite))):
            src = os.path.join(src_root, suite, case)
            model_path = os.path.join(src, "model.onnx")
            if not os.path.exists(model_path):
                continue
            model = onnx.load(model_path, load_external_data=False)
            ops = op_types(model)
            if not ops or any(d not in ("", "ai.onnx") or t not in supported for d, t in ops):
                continue
            dst = os.path.join(dst_root, suite, case)
            shutil.copytree(src, dst)
            manifest.append(f"{suite}/{case}")
    with open(os.path.join(root, "tests", "conformance", "MANIFEST.txt"), "w") as f:
        f.write(f"# ONNX backend test cases vendored from onnx=={ONNX_VERSION} by vendor.py\n")
        f.write("\n".join(manifest) + "\n")
    print(f"vendored {len(manifest)} cases into {dst_root}")


if __name__ == "__main__":
    main()
