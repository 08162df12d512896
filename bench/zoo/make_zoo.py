#!/usr/bin/env python3
"""Build a reproducible zoo of ONNX CNNs from keras.applications via tf2onnx.

For every model (random weights, fixed seed, batch 1):
  * build keras.applications.<Model>(weights=None) with its default input size;
  * randomise every BatchNormalization layer (gamma, beta, moving_mean,
    moving_variance) so that BN folding is never an identity, while keeping
    activations O(1) (see randomise_bn below);
  * convert to ONNX with tf2onnx (opset 17 by default), input NCHW
    (inputs_as_nchw), fixed shape [1,3,H,W]; graph input is named "input" and
    graph output "output";
  * save a seeded standard-normal NCHW float32 input and ONNX Runtime's output
    on it next to the model.

Note: tf2onnx (with TF grappler constant folding) folds a BN that follows a dense
Conv into the Conv's weights/bias, so no BatchNormalization node survives; BN after
a depthwise Conv or a Concat/pool stays as per-channel Mul+Add (see zoo_stats.py).

Reproducible: every model is built in its own subprocess with PYTHONHASHSEED=0 and
the graph is canonicalised (canonicalize()), so two runs give byte-identical
.onnx/.npy/.meta.json files (checked with the versions in requirements.txt).

Outputs (default directory ./zoo, or --out DIR):
  NAME.onnx, NAME.input.npy, NAME.ort_output.npy, NAME.meta.json

Idempotent: a model whose four files exist is skipped (use --force to redo).
Run with the venv described in requirements.txt, e.g.
  python make_zoo.py --out DIR            # ResNet50, InceptionV3, Xception
  python make_zoo.py --out DIR InceptionResNetV2 MobileNetV2   # the others, by name
  python make_zoo.py --out DIR ResNet50   # a subset
"""
import argparse
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = Path.cwd()
DEFAULT_OUT = Path("zoo")

# keras.applications constructor name -> input H=W
CORE = {"ResNet50": 224, "InceptionV3": 299, "Xception": 299}
# Built only when named: InceptionResNetV2 has bias-free residual 1x1 convs followed by a scaled
# add and ReLU (the shape of issue 7's bug); MobileNetV2 is in BENCHMARKS.md's reference table.
EXTRA = {"InceptionResNetV2": 299, "MobileNetV2": 224, "DenseNet121": 224}
MODELS = {**CORE, **EXTRA}


def rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def model_seed(base_seed: int, name: str) -> int:
    # stable per-model seed, independent of which subset is built
    return (base_seed * 1000003 + zlib.crc32(name.encode())) % (2**31 - 1)


def randomise_bn(model, rng, calib_batch):
    """Randomise all BN layers, calibrated so activations stay sane.

    1. gamma ~ U(0.5,1.5), beta ~ N(0,0.1) (when the layer has them).
    2. One training-mode forward pass with momentum=0 on a random calibration
       batch sets moving_mean/moving_variance to the true per-channel
       statistics of each BN input (so each BN output ~ gamma*N(0,1)+beta).
    3. Perturb the statistics: mean += d*std with d ~ N(0,0.1); var *= r with
       r ~ U(0.5,1.5); and compensate gamma *= sqrt(r), beta += gamma_old*d,
       so inference-mode activations on the calibration batch equal the
       training-mode ones. Layers with scale=False (Inception*) cannot absorb
       r, so for them r=1 (their variance is still the non-trivial measured
       one, and the mean is still perturbed).
    Returns a list of per-layer summaries.
    """
    import numpy as np
    import keras

    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    saved_momentum = {}
    for l in bns:
        c = l.moving_mean.shape[0]
        if l.gamma is not None:
            l.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
        if l.beta is not None:
            l.beta.assign(rng.normal(0.0, 0.1, c).astype("float32"))
        saved_momentum[l.name] = l.momentum
        l.momentum = 0.0
    model(calib_batch, training=True)  # updates moving stats to batch stats
    out = []
    for l in bns:
        l.momentum = saved_momentum[l.name]
        c = l.moving_mean.shape[0]
        mean = np.asarray(l.moving_mean.numpy(), dtype="float64")
        var = np.maximum(np.asarray(l.moving_variance.numpy(), dtype="float64"), 1e-4)
        std = np.sqrt(var + l.epsilon)
        d = rng.normal(0.0, 0.1, c)
        if l.gamma is not None:
            r = rng.uniform(0.5, 1.5, c)
            g = np.asarray(l.gamma.numpy(), dtype="float64")
        else:
            r = np.ones(c)
            g = np.ones(c)
        l.moving_mean.assign((mean + d * std).astype("float32"))
        l.moving_variance.assign((var * r).astype("float32"))
        if l.gamma is not None:
            l.gamma.assign((g * np.sqrt(r)).astype("float32"))
        if l.beta is not None:
            l.beta.assign((np.asarray(l.beta.numpy(), dtype="float64") + g * d).astype("float32"))
        out.append((l.name, c, l.gamma is not None))
    return out


def rename_io(model_proto, new_in="input", new_out="output"):
    g = model_proto.graph
    assert len(g.input) == 1 and len(g.output) == 1, "expected single input/output"
    mapping = {g.input[0].name: new_in, g.output[0].name: new_out}
    for n in g.node:
        for i, x in enumerate(n.input):
            if x in mapping:
                n.input[i] = mapping[x]
        for i, x in enumerate(n.output):
            if x in mapping:
                n.output[i] = mapping[x]
    g.input[0].name = new_in
    g.output[0].name = new_out


def canonicalize(model_proto):
    """Make tf2onnx's output byte-reproducible.

    tf2onnx names generated nodes/constants from a global counter and some of its
    optimizers iterate in object-address order, so the counter suffixes ("Conv__236")
    and hence node and initializer order vary from run to run, while the computation
    is identical. Here nodes are re-sorted topologically with ties broken by a
    structural hash (op, attributes, hashes of inputs; initializers by content), the
    "__<n>" suffixes are renumbered in that order, and initializers are ordered by
    first use.
    """
    import hashlib
    import re
    import heapq

    g = model_proto.graph
    sha = lambda *parts: hashlib.sha256(b"\0".join(parts)).hexdigest()
    th = {}  # tensor name -> structural hash
    for i in g.input:
        th[i.name] = sha(b"input", i.name.encode())
    for t in g.initializer:
        c = type(t)()
        c.CopyFrom(t)
        c.name = ""
        th[t.name] = sha(b"init", c.SerializeToString(deterministic=True))
    nh = []
    for n in g.node:  # tf2onnx emits nodes in a valid topological order
        attrs = b"".join(a.SerializeToString(deterministic=True)
                         for a in sorted(n.attribute, key=lambda a: a.name))
        h = sha(n.op_type.encode(), n.domain.encode(), attrs,
                *[th[x].encode() if x else b"" for x in n.input])
        nh.append(h)
        for k, o in enumerate(n.output):
            th[o] = sha(h.encode(), str(k).encode())
    # Kahn's algorithm, smallest structural hash first
    producer = {o: i for i, n in enumerate(g.node) for o in n.output}
    deps = [set(producer[x] for x in n.input if x in producer) for n in g.node]
    users = [[] for _ in g.node]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    indeg = [len(d) for d in deps]
    ready = [(nh[i], i) for i in range(len(g.node)) if indeg[i] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(ready, (nh[u], u))
    assert len(order) == len(g.node), "graph has a cycle?"
    nodes = [g.node[i] for i in order]
    # renumber generated "__<n>" suffixes in the new order
    # (generated initializers become "const__<n>": tf2onnx merges duplicate constants
    # and keeps an arbitrary one of their names)
    pat = re.compile(r"__\d+")
    init_names = {t.name for t in g.initializer}
    names = {}

    def ren(x):
        if not x or not pat.search(x):
            return x
        if x not in names:
            k = len(names) + 1
            names[x] = f"const__{k}" if x in init_names else pat.sub(f"__{k}", x)
        return names[x]

    first_use = {}
    for pos, n in enumerate(nodes):
        n.name = ren(n.name)
        for k, x in enumerate(n.input):
            first_use.setdefault(x, pos)
            n.input[k] = ren(x)
        for k, x in enumerate(n.output):
            n.output[k] = ren(x)
    inits = sorted(g.initializer, key=lambda t: (first_use.get(t.name, len(nodes)), th[t.name]))
    inits = [type(t).FromString(t.SerializeToString()) for t in inits]  # copies
    for t in inits:
        t.name = ren(t.name)
    new_nodes = [type(n).FromString(n.SerializeToString()) for n in nodes]
    del g.node[:]
    g.node.extend(new_nodes)
    del g.initializer[:]
    g.initializer.extend(inits)
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        vi.name = ren(vi.name)


def build_one(name, size, out_dir: Path, base_seed: int, opset: int, force: bool):
    import numpy as np

    onnx_p = out_dir / f"{name}.onnx"
    in_p = out_dir / f"{name}.input.npy"
    ort_p = out_dir / f"{name}.ort_output.npy"
    meta_p = out_dir / f"{name}.meta.json"
    if not force and all(p.exists() for p in (onnx_p, in_p, ort_p, meta_p)):
        print(f"[skip] {name}: {rel(onnx_p)} and its .npy/.meta.json already exist")
        return
    t0 = time.time()
    import tensorflow as tf
    import keras
    import onnx
    import onnxruntime as ort
    import tf2onnx

    seed = model_seed(base_seed, name)
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    ctor = getattr(keras.applications, name)
    model = ctor(weights=None, include_top=True, input_shape=(size, size, 3))
    print(f"[build] {name}: keras.applications.{name}(weights=None) input {size}x{size}, "
          f"{model.count_params():,} params, seed {seed}")

    calib = rng.standard_normal((4, size, size, 3)).astype("float32")
    bn_info = randomise_bn(model, rng, calib)
    n_scale_false = sum(1 for _, _, has_g in bn_info if not has_g)
    print(f"[bn] {name}: randomised {len(bn_info)} BatchNormalization layers "
          f"({n_scale_false} with scale=False)")

    x_nchw = np.random.default_rng(seed + 1).standard_normal((1, 3, size, size)).astype("float32")
    x_nhwc = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
    ref = np.asarray(model(x_nhwc, training=False))
    penult = keras.Model(model.inputs, model.layers[-2].output)
    feat = np.asarray(penult(x_nhwc, training=False))

    if force or not onnx_p.exists():
        spec = (tf.TensorSpec((1, size, size, 3), tf.float32, name="input"),)

        @tf.function(input_signature=spec)
        def fn(x):
            return model(x, training=False)

        t1 = time.time()
        mp, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset,
                                              inputs_as_nchw=["input"])
        rename_io(mp)
        canonicalize(mp)
        mp.doc_string = (f"keras.applications.{name}(weights=None), seed {seed}, randomised "
                         f"BatchNormalization; converted by tf2onnx {tf2onnx.__version__}")
        onnx.checker.check_model(mp)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = onnx_p.with_suffix(".onnx.tmp")
        onnx.save(mp, str(tmp))
        tmp.replace(onnx_p)
        print(f"[convert] {name}: tf2onnx opset {opset} -> {rel(onnx_p)} "
              f"({onnx_p.stat().st_size/1e6:.1f} MB, {time.time()-t1:.1f}s)")
    else:
        print(f"[keep] {name}: {rel(onnx_p)} exists, regenerating .npy files only")
        mp = onnx.load(str(onnx_p))

    sess = ort.InferenceSession(str(onnx_p), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x_nchw})[0]
    diff = float(np.max(np.abs(y - ref)))
    np.save(in_p, x_nchw)
    np.save(ort_p, y)
    meta = {
        "model": name,
        "source": f"keras.applications.{name}(weights=None, include_top=True)",
        "seed": seed,
        "opset": opset,
        "input_name": sess.get_inputs()[0].name,
        "input_shape": list(x_nchw.shape),
        "output_name": sess.get_outputs()[0].name,
        "output_shape": list(y.shape),
        "bn_layers_randomised": len(bn_info),
        "bn_layers_scale_false": n_scale_false,
        "max_abs_diff_keras_vs_ort": diff,
        "output_max_prob": float(y.max()),
        "output_entropy_nats": float(-(y * np.log(np.maximum(y, 1e-30))).sum()),
        "penultimate_features_mean": float(feat.mean()),
        "penultimate_features_std": float(feat.std()),
        "penultimate_features_absmax": float(np.abs(feat).max()),
        "versions": {m.__name__: m.__version__ for m in (tf, keras, tf2onnx, onnx, ort, np)},
    }
    meta_p.write_text(json.dumps(meta, indent=1) + "\n")
    print(f"[ort] {name}: wrote {rel(in_p)} {list(x_nchw.shape)}, {rel(ort_p)} {list(y.shape)}; "
          f"max|keras-ort|={diff:.2e}, max prob {y.max():.4f}, "
          f"penultimate mean/std/absmax {feat.mean():.3f}/{feat.std():.3f}/{np.abs(feat).max():.3f}")
    print(f"[done] {name} in {time.time()-t0:.1f}s")
    keras.backend.clear_session()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help=f"subset of {list(MODELS)} (default: {list(CORE)})")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--force", action="store_true", help="rebuild even if files exist")
    ap.add_argument("--in-process", action="store_true",
                    help="build in this process (default: one fresh subprocess per model with "
                         "PYTHONHASHSEED=0, because tf2onnx names nodes from a process-global "
                         "counter and orders initializers by hash; only so are the .onnx files "
                         "byte-identical from run to run)")
    a = ap.parse_args()
    names = a.models or list(CORE)
    for n in names:
        if n not in MODELS:
            sys.exit(f"unknown model {n}; choose from {list(MODELS)}")
    a.out.mkdir(parents=True, exist_ok=True)
    for n in names:
        if a.in_process:
            build_one(n, MODELS[n], a.out, a.seed, a.opset, a.force)
            continue
        cmd = [sys.executable, __file__, n, "--in-process", "--out", str(a.out),
               "--seed", str(a.seed), "--opset", str(a.opset)] + (["--force"] if a.force else [])
        # PYTHONHASHSEED: tf2onnx orders initializers through set/dict iteration of names
        env = dict(os.environ, PYTHONHASHSEED="0")
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        sys.stdout.write(p.stdout)
        sys.stdout.flush()
        if p.returncode != 0:
            sys.stderr.write(p.stderr[-4000:])
            sys.exit(f"[fail] {n}: exit code {p.returncode}")


if __name__ == "__main__":
    main()
