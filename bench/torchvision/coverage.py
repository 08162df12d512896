#!/usr/bin/env python3
"""Export every torchvision classification model to ONNX and check incept on it against ONNX Runtime.

For each model (random weights from a fixed seed; every BatchNorm2d randomised and calibrated so that
activations stay O(1), every LayerNorm given a random affine; module in eval mode):

  NAME.onnx         torch.onnx.export, TorchScript exporter, opset 17, batch 1, constant folding
                    (the exporter folds BatchNorm into Conv, as users get it)
  NAME.latest.onnx  torch.onnx.export with the dynamo exporter at the newest opset it offers
  NAME.dyn.onnx     as NAME.onnx with a dynamic batch dimension "N" on the input and output

Input: a seeded standard-normal batch of 1, 3x224x224 (3x299x299 for inception_v3); every model
sees that size, not its weights' preferred resolution (the weights are random anyway).

Checks, each written to RESULTS/NAME.json (the script skips a model whose result exists unless
--force; the ONNX files are deleted after the checks unless --keep, they total tens of GB):
  ops        op types of NAME.onnx and NAME.latest.onnx that `incept ops` does not list
  ort        ONNX Runtime (1 thread) on each export vs torch's own output
  reference  `incept run --reference` (the interpreter) on NAME.onnx vs ONNX Runtime
  jit        `incept run` (compiled) on each export vs ONNX Runtime (the dynamic one with --dim N=1)
  latency    with --latency only (a separate run, machine otherwise idle): `incept bench
             --threads 1` median vs ONNX Runtime's median at 1 thread, min over 3 alternating rounds

An output "matches" when max|incept - ort| <= 1e-4 * max|ort| (relative to the output's scale;
per-element relative error is meaningless for logits near 0). The worst element-wise relative
error is recorded too.

--table renders RESULTS/*.json as the Markdown table the README carries (between the markers
`<!-- torchvision:start -->` and `<!-- torchvision:end -->`; --readme PATH rewrites it in place).

Usage (in a venv with requirements.txt, from the repo root, after `cargo build --release`):
  python bench/torchvision/coverage.py --work /tmp/tv --results bench/torchvision/results [NAME ...]
  python bench/torchvision/coverage.py --results bench/torchvision/results --table --readme README.md
  python bench/torchvision/coverage.py --export-only --work /tmp/tv NAME ...   (models for
      bench/compare.py --model /tmp/tv/NAME.onnx, the same seeds as the checks)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-4
LATEST_OPSET = 23  # torch.onnx's ONNX_MAX_OPSET in torch 2.15 (the dynamo exporter)


def model_seed(base_seed: int, name: str) -> int:
    return (base_seed * 1000003 + zlib.crc32(name.encode())) % (2**31 - 1)


def all_models():
    from torchvision import models

    return sorted(models.list_models(module=models))


def input_size(name: str) -> int:
    return 299 if name == "inception_v3" else 224


def randomise(model, rng, calib):
    """BatchNorm2d: random affine and running statistics calibrated on a random batch (as in
    tests/fixtures/tools/make_fixtures_torch.py), so that eval-mode activations stay O(1).
    LayerNorm (and torchvision's LayerNorm2d): random affine."""
    import numpy as np
    import torch
    from torch import nn

    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    lns = [m for m in model.modules() if isinstance(m, nn.LayerNorm) and m.elementwise_affine]
    with torch.no_grad():
        # Layers initialised to zero (ViT's classifier head) would make the output constant and
        # every comparison pass trivially: give them PyTorch's default random initialisation.
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)) and not bool(m.weight.any()):
                m.reset_parameters()
        for ln in lns:
            shape = tuple(ln.weight.shape)
            ln.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, shape).astype("float32")))
            ln.bias.copy_(torch.from_numpy(rng.normal(0.0, 0.1, shape).astype("float32")))
        if bns:
            for bn in bns:
                c = bn.num_features
                bn.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, c).astype("float32")))
                bn.bias.copy_(torch.from_numpy(rng.normal(0.0, 0.1, c).astype("float32")))
                bn.momentum = 1.0
            model.train()
            model(calib)
            model.eval()
            for bn in bns:
                c = bn.num_features
                bn.momentum = 0.1
                mean = bn.running_mean.double().numpy()
                var = np.maximum(bn.running_var.double().numpy(), 1e-4)
                std = np.sqrt(var + bn.eps)
                d = rng.normal(0.0, 0.1, c)
                r = rng.uniform(0.5, 1.5, c)
                g = bn.weight.double().numpy()
                b = bn.bias.double().numpy()
                bn.running_mean.copy_(torch.from_numpy((mean + d * std).astype("float32")))
                bn.running_var.copy_(torch.from_numpy((var * r).astype("float32")))
                bn.weight.copy_(torch.from_numpy((g * np.sqrt(r)).astype("float32")))
                bn.bias.copy_(torch.from_numpy((b + g * d).astype("float32")))
    model.eval()
    return len(bns), len(lns)


class mha_fastpath_off:
    def __enter__(self):
        import torch

        self.was = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)

    def __exit__(self, *exc):
        import torch

        torch.backends.mha.set_fastpath_enabled(self.was)


def export_dir(work: Path, name: str, variant: str) -> Path:
    d = work / f"{name}.{variant}.export"
    d.mkdir(parents=True, exist_ok=True)
    return d


def remove_exports(work: Path, name: str):
    import shutil

    for f in work.glob(f"{name}.*"):
        if f.is_dir():
            shutil.rmtree(f)
        else:
            f.unlink()


def export_all(name, model, x, work: Path, log):
    """Writes the three exports; returns {variant: path or error text}."""
    import torch

    out = {}
    xt = torch.from_numpy(x)
    # One directory per export: above 2 GB the TorchScript exporter writes every weight as its
    # own external-data file named after the tensor, and two exports in one directory would
    # overwrite each other's weights.
    specs = [
        ("opset17", f"{name}.onnx", dict(dynamo=False, opset_version=17, do_constant_folding=True)),
        ("dynamic", f"{name}.dyn.onnx",
         dict(dynamo=False, opset_version=17, do_constant_folding=True,
              dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})),
        ("latest", f"{name}.latest.onnx", dict(dynamo=True, opset_version=LATEST_OPSET)),
    ]
    for variant, file, kw in specs:
        path = export_dir(work, name, variant) / file
        t0 = time.time()
        try:
            # The fused multi-head-attention fast path (eval mode, no grad) has no ONNX symbolic in
            # the TorchScript exporter; the unfused path computes the same function.
            with warnings.catch_warnings(), mha_fastpath_off():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (xt,), str(path), input_names=["input"],
                                  output_names=["output"], **kw)
            out[variant] = path
            log(f"  export {variant}: {path.stat().st_size / 1e6:.1f} MB in {time.time() - t0:.0f} s")
        except Exception as e:  # the exporter's own failure is a result, not a crash
            out[variant] = f"export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            log(f"  export {variant}: FAILED {out[variant]}")
    return out


def op_types(path):
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    seen = set()

    def walk(g):
        for n in g.node:
            seen.add(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}")
            for a in n.attribute:
                if a.g is not None and a.g.node:
                    walk(a.g)

    walk(m.graph)
    return sorted(seen)


def supported_ops(incept):
    out = subprocess.run([incept, "ops"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def compare(got, want):
    import numpy as np

    if got.shape != want.shape:
        return {"match": False, "why": f"shape {list(got.shape)} vs {list(want.shape)}"}
    got = got.astype("float64")
    want = want.astype("float64")
    scale = float(np.max(np.abs(want))) or 1.0
    abs_err = float(np.max(np.abs(got - want)))
    rel = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-30)))
    finite = bool(np.all(np.isfinite(got)))
    return {"match": finite and abs_err <= TOL * scale, "max_abs": abs_err,
            "scaled": abs_err / scale, "max_elem_rel": rel}


def first_error_line(stderr: str) -> str:
    lines = [l.strip() for l in stderr.splitlines() if l.strip()]
    for l in lines:
        if l.lower().startswith("error"):
            return l[:300]
    return (lines[-1] if lines else "no output")[:300]


def run_incept(args, timeout):
    t0 = time.time()
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    if p.returncode != 0:
        return None, first_error_line(p.stderr)
    return p, round(time.time() - t0, 1)


def ort_session(path, threads=1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def time_ort(sess, x, budget_s):
    sess.run(None, {"input": x})
    samples = []
    t_end = time.time() + budget_s
    while len(samples) < 5 or (time.time() < t_end and len(samples) < 50):
        t0 = time.perf_counter()
        sess.run(None, {"input": x})
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples), len(samples)


def measure_latency(name, a, incept, log):
    """Re-exports the opset-17 model and times incept and ONNX Runtime at one thread, back to
    back, alternating rounds (run this with the machine otherwise idle)."""
    import numpy as np
    import torch

    model, x, _, _ = seeded(name, model_seed(a.seed, name))
    a.work.mkdir(parents=True, exist_ok=True)
    path = export_dir(a.work, name, "latency") / f"{name}.onnx"
    with torch.no_grad(), warnings.catch_warnings(), mha_fastpath_off():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x),), str(path), input_names=["input"],
                          output_names=["output"], dynamo=False, opset_version=17, do_constant_folding=True)
    del model
    x_path = a.work / f"{name}.input.npy"
    np.save(x_path, x)
    sess = ort_session(path)
    inc, orts = [], []
    for _ in range(3):
        p, info = run_incept([incept, "bench", str(path), "--threads", "1", "--json", "--iters", str(a.iters),
                              "--warmup", "2", "-i", str(x_path)], a.timeout)
        if p is None:
            return {"error": info}
        inc.append(json.loads(p.stdout)["median_ms"])
        orts.append(time_ort(sess, x, a.bench_s)[0])
    remove_exports(a.work, name)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    r = {"incept_ms": min(inc), "ort_ms": min(orts), "rounds": 3, "incept_iters": a.iters,
         "ort_budget_s": a.bench_s, "incept_commit": commit,
         "note": "min over 3 alternating rounds of each side's median, 1 thread"}
    r["ratio"] = round(r["incept_ms"] / r["ort_ms"], 3)
    log(f"{name}: latency {r}")
    return r


def seeded(name, seed):
    """The model with its seeded random weights (see `randomise`), its input, and how many
    BatchNorm and LayerNorm layers were randomised."""
    import numpy as np
    import torch
    from torchvision import models

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = models.get_model(name, weights=None)
    size = input_size(name)
    calib = torch.from_numpy(rng.standard_normal((2, 3, size, size)).astype("float32"))
    n_bn, n_ln = randomise(model, rng, calib)
    x = np.random.default_rng(seed + 1).standard_normal((1, 3, size, size)).astype("float32")
    return model, x, n_bn, n_ln


def export_for_bench(name, a, log):
    """--export-only: WORK/NAME.onnx (the opset-17 TorchScript export) and WORK/NAME.input.npy, as
    `bench/compare.py --model` takes them."""
    import numpy as np
    import torch

    a.work.mkdir(parents=True, exist_ok=True)
    model, x, _, _ = seeded(name, model_seed(a.seed, name))
    path = a.work / f"{name}.onnx"
    with warnings.catch_warnings(), mha_fastpath_off():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x),), str(path), input_names=["input"],
                          output_names=["output"], dynamo=False, opset_version=17, do_constant_folding=True)
    np.save(a.work / f"{name}.input.npy", x)
    log(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB)")


def check_model(name, a, incept, supported, log):
    import numpy as np
    import torch

    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    seed = model_seed(a.seed, name)
    t0 = time.time()
    model, x, n_bn, n_ln = seeded(name, seed)
    size = input_size(name)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    params = sum(p.numel() for p in model.parameters())
    # An output that does not depend on the input would let any comparison pass.
    spread = float(ref.max() - ref.min())
    if spread == 0.0 or not np.isfinite(ref).all():
        raise SystemExit(f"{name}: degenerate torch output (spread {spread}); fix the initialisation")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    r = {"model": name, "seed": seed, "input": [1, 3, size, size], "params": params, "incept_commit": commit,
         "bn_randomised": n_bn, "ln_randomised": n_ln,
         "versions": {m.__name__: m.__version__ for m in (torch, __import__("torchvision"),
                                                           __import__("onnx"),
                                                           __import__("onnxruntime"), np)}}
    log(f"{name}: {params / 1e6:.1f} M params, input {size}x{size}")
    x_path = work / f"{name}.input.npy"
    np.save(x_path, x)
    with torch.no_grad():
        paths = export_all(name, model, x, work, log)
    del model

    variants = {}
    ort_out = {}
    for variant, path in paths.items():
        v = {}
        variants[variant] = v
        if not isinstance(path, Path):
            v["export"] = path
            continue
        v["onnx_mb"] = round(sum(f.stat().st_size for f in path.parent.iterdir()) / 1e6, 1)
        ops = op_types(path)
        v["ops"] = ops
        v["missing_ops"] = [o for o in ops if o not in supported]
        try:
            sess = ort_session(path)
            y = sess.run(None, {"input": x})[0]
            ort_out[variant] = y
            v["ort_vs_torch"] = compare(y, ref)
            if variant == "opset17":
                v["ort_ms"], v["ort_iters"] = time_ort(sess, x, a.bench_s)
            del sess
        except Exception as e:
            v["ort"] = f"ONNX Runtime failed: {str(e).splitlines()[0][:200]}"
            continue
        out_path = work / f"{name}.{variant}.jit.npy"
        extra = ["--dim", "N=1"] if variant == "dynamic" else []
        p, info = run_incept([incept, "run", str(path), "-i", str(x_path), "-o", str(out_path)] + extra,
                             a.timeout)
        if p is None:
            v["jit"] = {"error": info}
        else:
            v["jit"] = compare(np.load(out_path), y)
            v["jit"]["seconds"] = info
        log(f"  {variant}: missing {v['missing_ops']}, jit {v['jit']}")
        if variant == "opset17":
            out_ref = work / f"{name}.ref.npy"
            p, info = run_incept([incept, "run", str(path), "--reference", "-i", str(x_path), "-o",
                                  str(out_ref)], a.ref_timeout)
            if p is None:
                v["reference"] = {"error": info}
            else:
                v["reference"] = compare(np.load(out_ref), y)
                v["reference"]["seconds"] = info
            log(f"  reference: {v['reference']}")
            if "error" not in v["jit"]:
                p, info = run_incept([incept, "bench", str(path), "--threads", "1", "--json",
                                      "--iters", str(a.iters), "--warmup", "2"], a.timeout)
                if p is None:
                    v["bench"] = {"error": info}
                else:
                    b = json.loads(p.stdout)
                    v["bench"] = {"median_ms": b["median_ms"], "min_ms": b["min_ms"],
                                  "compile_s": b.get("compile_s"), "iters": b["iters"]}
                    v["ratio"] = round(b["median_ms"] / v["ort_ms"], 3)
                log(f"  bench: {v.get('bench')} vs ORT {v.get('ort_ms'):.1f} ms")
    r["variants"] = variants
    r["seconds"] = round(time.time() - t0)
    if not a.keep:
        remove_exports(work, name)
    return r


# ---------------------------------------------------------------------------------------------
# the table


def cell_match(c):
    if not c:
        return "-"
    if "error" in c:
        return "no"
    return ("yes" if c["match"] else "**no**") + f" ({c['scaled']:.1e})"


def render(results):
    rows = ["| model | params | ops missing | imports | reference = ORT | JIT = ORT | "
            "JIT = ORT (opset 23) | JIT = ORT (dynamic batch) | incept / ORT, 1 thread | note |",
            "|---|---:|---|---|---|---|---|---|---|---|"]
    for r in results:
        v = r["variants"]
        s = v.get("opset17", {})
        missing = sorted(set(s.get("missing_ops", [])) | set(v.get("latest", {}).get("missing_ops", [])))
        jit_err = s.get("jit", {}).get("error")
        imports = "no" if jit_err and ("not supported" in jit_err or "cannot load" in jit_err) else "yes"
        notes = []
        for name, c in (("opset 17", s.get("jit")), ("reference", s.get("reference")),
                        ("opset 23", v.get("latest", {}).get("jit")),
                        ("dynamic", v.get("dynamic", {}).get("jit"))):
            if c and "error" in c:
                notes.append(f"{name}: {c['error']}")
        for k in ("latest", "dynamic"):
            if "export" in v.get(k, {}):
                notes.append(f"{k}: {v[k]['export']}")
        # Where incept misses, say how far ONNX Runtime itself is from torch and from the exact
        # (f64) reference: with random weights a deep net can amplify float32 rounding past 1e-4.
        misses = [c for c in (s.get("jit"), v.get("latest", {}).get("jit"), v.get("dynamic", {}).get("jit"))
                  if c and "error" not in c and not c["match"]]
        if misses and "ort_vs_torch" in s and "scaled" in s.get("reference", {}):
            notes.append(f"ill-conditioned: ONNX Runtime is {s['ort_vs_torch']['scaled']:.1e} from torch "
                         f"and {s['reference']['scaled']:.1e} from incept's f64 reference")
        # ONNX Runtime, the yardstick, can itself be more than 1e-4 from torch.
        label = {"opset17": "opset 17", "latest": "opset 23", "dynamic": "dynamic"}
        off = [(label[k], v[k]["ort_vs_torch"]["scaled"]) for k in label
               if not v.get(k, {}).get("ort_vs_torch", {"match": True})["match"]]
        if off and not misses:
            notes.append(f"ONNX Runtime is up to {max(x for _, x in off):.1e} from torch "
                         f"({', '.join(n for n, _ in off)})")
        # Only a --latency run (one model at a time, nothing else running) goes in the table;
        # the check run's own timings share the machine with exports and interpreters.
        lat_r = r.get("latency", {})
        lat = (f"{lat_r['incept_ms']:.1f} / {lat_r['ort_ms']:.1f} ms = {lat_r['ratio']:.2f}"
               if "ratio" in lat_r else "not yet measured")
        rows.append(
            f"| {r['model']} | {r['params'] / 1e6:.1f} M | {', '.join(missing) or '-'} | {imports} | "
            f"{cell_match(s.get('reference'))} | {cell_match(s.get('jit'))} | "
            f"{cell_match(v.get('latest', {}).get('jit'))} | {cell_match(v.get('dynamic', {}).get('jit'))} | "
            f"{lat} | {'; '.join(notes).replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="model names (default: every torchvision classification model)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/incept-torchvision"))
    ap.add_argument("--results", type=Path, default=REPO / "bench/torchvision/results")
    ap.add_argument("--incept", default=str(REPO / "target/release/incept"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the ONNX exports in --work")
    ap.add_argument("--timeout", type=int, default=900, help="seconds for one compile/run/bench")
    ap.add_argument("--ref-timeout", type=int, default=900, help="seconds for one interpreter run")
    ap.add_argument("--iters", type=int, default=10, help="incept bench iterations")
    ap.add_argument("--bench-s", type=float, default=5.0, help="ONNX Runtime timing budget per model")
    ap.add_argument("--table", action="store_true", help="print the Markdown table of --results")
    ap.add_argument("--readme", type=Path, help="with --table: rewrite the table in this README")
    ap.add_argument("--export-only", action="store_true",
                    help="only write WORK/NAME.onnx (the opset-17 export) and WORK/NAME.input.npy, for "
                         "bench/compare.py --model; no checks, no results")
    ap.add_argument("--latency", action="store_true",
                    help="only time incept and ONNX Runtime (1 thread, alternating rounds) for models "
                         "that have a result, adding it to the result; run with the machine otherwise idle")
    a = ap.parse_args()

    if a.table:
        results = [json.loads(p.read_text()) for p in sorted(a.results.glob("*.json"))]
        table = render(results)
        done = {r["model"] for r in results}
        pending = [m for m in all_models() if m not in done]
        if pending:
            table += f"\nNot checked yet ({len(pending)} of {len(done) + len(pending)}): {', '.join(pending)}.\n"
        if a.readme:
            text = a.readme.read_text()
            start, end = "<!-- torchvision:start -->\n", "<!-- torchvision:end -->"
            i, j = text.index(start) + len(start), text.index(end)
            a.readme.write_text(text[:i] + table + text[j:])
        else:
            print(table, end="")
        return

    import torch

    torch.set_num_threads(2)
    names = a.models or all_models()
    supported = None if a.export_only else supported_ops(a.incept)
    a.results.mkdir(parents=True, exist_ok=True)
    for name in names:
        if a.export_only:
            export_for_bench(name, a, lambda s: print(s, flush=True))
            continue
        dest = a.results / f"{name}.json"
        if a.latency:
            if not dest.exists():
                print(f"[skip] {name}: no result to add latency to", flush=True)
                continue
            r = json.loads(dest.read_text())
            if "latency" in r and not a.force:
                continue
            r["latency"] = measure_latency(name, a, a.incept, lambda s: print(s, flush=True))
            dest.write_text(json.dumps(r, indent=1, sort_keys=True) + "\n")
            continue
        if dest.exists() and not a.force:
            print(f"[skip] {name}: {dest} exists", flush=True)
            continue
        r = check_model(name, a, a.incept, supported, lambda s: print(s, flush=True))
        dest.write_text(json.dumps(r, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
