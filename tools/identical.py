#!/usr/bin/env python3
"""Checks that two incept binaries compile and run models identically, bit for bit.

For refactors that must not change behaviour: every model is compiled by both binaries on
every kernel tier given, and the `.incept` artifacts (code, packed weights, step tables) must
be byte-identical, or both compiles must fail with the same message. Models with an input file
are also run from each artifact at each thread count, and the output files must be identical.

    python3 tools/identical.py OLD_INCEPT NEW_INCEPT [--zoo DIR] [--tiers baseline,avx2,avx512]
        [--threads 1,2] [--conformance]

With --across-formats (when the artifact format itself changed), each binary runs the artifact it
wrote, and the plans are compared by `incept inspect MODEL --kernels` (kernels, tiles, shapes of
every step) instead of byte for byte.

Models: tests/fixtures/*.onnx (with their .input.npy), the zoo's ResNet50/InceptionV3/Xception
when --zoo is given (bench/zoo/make_zoo.py writes them), and with --conformance every vendored
ONNX backend model (compiled only: their inputs are protobuf test data).
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode, p.stderr


def plan_text(exe, model, tier):
    p = subprocess.run([exe, "inspect", str(model), "--kernels", "--cpu", tier], capture_output=True, text=True)
    return p.returncode, p.stdout if p.returncode == 0 else p.stderr


def compile_both(old, new, model, tier, tmp, across_formats=False):
    outs = []
    for k, exe in enumerate([old, new]):
        art = tmp / f"{k}.incept"
        art.unlink(missing_ok=True)
        rc, err = run([exe, "compile", str(model), "--cpu", tier, "-o", str(art)])
        outs.append((rc, err if rc else "", art))
    (rc0, e0, a0), (rc1, e1, a1) = outs
    if rc0 != rc1 or (rc0 and e0 != e1):
        return f"compile differs: exit {rc0} vs {rc1}\n  old: {e0.strip()[:300]}\n  new: {e1.strip()[:300]}", None
    if rc0:
        return None, "failed"
    if across_formats:
        if plan_text(old, model, tier) != plan_text(new, model, tier):
            return "plans differ", None
        return None, (a0, a1)
    if a0.read_bytes() != a1.read_bytes():
        return "artifacts differ", None
    return None, (a0, a0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--zoo", type=Path)
    ap.add_argument("--tiers", default="baseline,avx2,avx512")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--conformance", action="store_true")
    ap.add_argument("--across-formats", action="store_true")
    a = ap.parse_args()
    models = []
    for m in sorted((ROOT / "tests/fixtures").glob("*.onnx")):
        inp = m.with_suffix(".input.npy")
        models.append((m.stem, m, inp if inp.exists() else None))
    if a.zoo:
        for name in ["ResNet50", "InceptionV3", "Xception"]:
            models.append((name, a.zoo / f"{name}.onnx", a.zoo / f"{name}.input.npy"))
    if a.conformance:
        for m in sorted((ROOT / "tests/conformance/data").glob("*/*/model.onnx")):
            models.append((m.parent.name, m, None))
    failures, both_failed, compared, runs = [], [], 0, 0
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, model, inp in models:
            for tier in a.tiers.split(","):
                err, art = compile_both(a.old, a.new, model, tier, tmp, a.across_formats)
                compared += 1
                if err:
                    failures.append(f"{name} [{tier}]: {err}")
                    print(f"DIFF {name} [{tier}]: {err}", flush=True)
                    continue
                if art == "failed":
                    both_failed.append(f"{name} [{tier}]")
                    continue
                if inp is None:
                    continue
                for t in a.threads.split(","):
                    outs = []
                    for k, exe in enumerate([a.old, a.new]):
                        o = tmp / f"out{k}.npy"
                        o.unlink(missing_ok=True)
                        rc, e = run([exe, "run", str(art[k]), "-i", str(inp), "--threads", t, "-o", str(o)])
                        outs.append(o.read_bytes() if rc == 0 else None)
                    runs += 1
                    if None in outs or outs[0] != outs[1]:
                        failures.append(f"{name} [{tier}, {t} threads]: outputs differ")
                        print(f"DIFF {name} [{tier}, {t} threads]: outputs differ", flush=True)
            print(f"{name}: done", flush=True)
    print(f"{compared} compiles compared ({len(both_failed)} refused by both alike), {runs} runs compared, "
          f"{len(failures)} differences")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
