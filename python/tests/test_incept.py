"""Tests of the Python package: run with `python/ci.sh` (builds the wheel into a venv first)."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest

import incept

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
MODEL = FIXTURES / "mini_resnet.onnx"
DYNAMIC = Path(__file__).resolve().parent / "data" / "mini_resnet_dynamic.onnx"


@pytest.fixture(scope="module")
def x():
    return np.load(FIXTURES / "mini_resnet.input.npy")


@pytest.fixture(scope="module")
def ort_output():
    return np.load(FIXTURES / "mini_resnet.ort_output.npy")


@pytest.fixture(scope="module")
def model():
    return incept.compile(MODEL)


def test_matches_onnxruntime(model, x, ort_output):
    out = model.run({"input": x})
    assert list(out) == ["output"]
    y = out["output"]
    assert y.dtype == np.float32 and y.shape == ort_output.shape
    np.testing.assert_allclose(y, ort_output, rtol=0, atol=1e-4)


@pytest.mark.parametrize("path", ["pathlike", "str", "bytes"])
def test_compile_from_path_str_or_bytes(path, x, ort_output):
    source = {"pathlike": MODEL, "str": str(MODEL), "bytes": MODEL.read_bytes()}[path]
    y = incept.compile(source).run({"input": x})["output"]
    np.testing.assert_allclose(y, ort_output, rtol=0, atol=1e-4)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_opt_levels_agree(level, x, ort_output):
    y = incept.compile(MODEL, opt_level=level).run({"input": x})["output"]
    np.testing.assert_allclose(y, ort_output, rtol=0, atol=1e-4)


def test_onnxruntime_form(model, x, ort_output):
    by_dict = model.run({"input": x})["output"]
    [all_outputs] = model.run(None, {"input": x})
    [named] = model.run(["output"], {"input": x})
    [keyword] = model.run(output_names=["output"], input_feed={"input": x})
    for y in (all_outputs, named, keyword):
        np.testing.assert_array_equal(y, by_dict)
    np.testing.assert_allclose(all_outputs, ort_output, rtol=0, atol=1e-4)


def test_non_contiguous_input_is_copied(model, x):
    fortran = np.asfortranarray(x)
    assert not fortran.flags.c_contiguous
    np.testing.assert_array_equal(model.run({"input": fortran})["output"], model.run({"input": x})["output"])


def test_metadata(model):
    [i] = model.inputs
    assert (i.name, i.dtype, i.shape, i.type) == ("input", "float32", [1, 3, 64, 64], "tensor(float)")
    [o] = model.outputs
    assert (o.name, o.dtype, o.shape, o.type) == ("output", "float32", [1, 10], "tensor(float)")
    assert [a.name for a in model.get_inputs()] == ["input"]
    assert [a.name for a in model.get_outputs()] == ["output"]
    assert "input: float32[1,3,64,64]" in repr(model)
    assert "'input'" in repr(i)


def test_threads_option(x):
    assert incept.compile(MODEL, threads=1).threads == 1
    assert incept.compile(MODEL, threads=2).threads == 2
    assert incept.compile(MODEL).threads >= 1
    with pytest.raises(ValueError, match="threads must be >= 0"):
        incept.compile(MODEL, threads=-1)
    # Thousands of threads are refused with the limit, at once.
    start = time.monotonic()
    with pytest.raises(incept.InceptError, match=r"100000 worker threads asked for; at most \d+"):
        incept.compile(MODEL, threads=100000)
    assert time.monotonic() - start < 1.0


def test_save_and_load(model, x, tmp_path):
    path = tmp_path / "mini_resnet.incept"
    model.save(path)
    assert path.stat().st_size > 0
    loaded = incept.load(path)
    assert [(a.name, a.dtype, a.shape) for a in loaded.inputs] == [("input", "float32", [1, 3, 64, 64])]
    np.testing.assert_array_equal(loaded.run({"input": x})["output"], model.run({"input": x})["output"])
    # A loaded model saves again, byte for byte.
    again = tmp_path / "again.incept"
    loaded.save(str(again))
    assert again.read_bytes() == path.read_bytes()
    # Saved over the very file it was loaded from (and still maps): the file is replaced whole,
    # and the loaded model keeps running on the old one.
    loaded.save(path)
    assert path.read_bytes() == again.read_bytes()
    np.testing.assert_array_equal(loaded.run({"input": x})["output"], model.run({"input": x})["output"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.incept", "mini_resnet.incept"]


def test_signed_artifacts(model, x, tmp_path):
    # A key pair as `incept keygen` writes it (the secret key is the Ed25519 seed).
    seed, public = bytes(range(32)), "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    (tmp_path / "k").write_text("incept-ed25519-secret-key " + seed.hex() + "\n")
    (tmp_path / "k.pub").write_text("incept-ed25519-public-key " + public + "\n")
    (tmp_path / "other.pub").write_text("incept-ed25519-public-key " + "d7" * 32 + "\n")
    signed, unsigned = tmp_path / "s.incept", tmp_path / "u.incept"
    model.save(signed, signing_key=tmp_path / "k")
    model.save(unsigned)
    want = model.run({"input": x})["output"]
    for key in [tmp_path / "k.pub", str(tmp_path / "k.pub"), bytes.fromhex(public)]:
        m = incept.load(signed, trusted_key=key)
        np.testing.assert_array_equal(m.run({"input": x})["output"], want)
    with pytest.raises(incept.InceptError, match="not signed"):
        incept.load(unsigned, trusted_key=tmp_path / "k.pub")
    with pytest.raises(incept.InceptError, match="does not trust"):
        incept.load(signed, trusted_key=tmp_path / "other.pub")
    with pytest.raises(ValueError, match="holds 3 bytes"):
        incept.load(signed, trusted_key=b"abc")
    with pytest.raises(incept.InceptError, match="not an incept public key"):
        incept.load(signed, trusted_key=tmp_path / "k")


def test_shapes_bind_a_symbolic_batch(model, x):
    flipped = np.ascontiguousarray(x[:, :, ::-1, :])
    batch = np.concatenate([x, flipped])
    expected = np.concatenate([model.run({"input": x})["output"], model.run({"input": flipped})["output"]])
    for shapes in ({"N": 2}, {"input": [2, 3, 64, 64]}, {"input": (2, 3, 64, 64)}):
        m = incept.compile(DYNAMIC, shapes=shapes)
        assert m.inputs[0].shape == [2, 3, 64, 64]
        assert m.outputs[0].shape == [2, 10]
        np.testing.assert_allclose(m.run({"input": batch})["output"], expected, rtol=0, atol=1e-5)


def test_symbolic_shape_without_shapes_says_how_to_bind(x):
    with pytest.raises(incept.InceptError, match=r"symbolic shape.*shapes="):
        incept.compile(DYNAMIC)


def test_bad_shapes():
    with pytest.raises(incept.InceptError, match=r"'input'.*fixed shape f32\[1,3,64,64\]"):
        incept.compile(MODEL, shapes={"input": [2, 3, 64, 64]})
    with pytest.raises(incept.InceptError, match=r"'nope'.*no such graph input \(inputs: input\)"):
        incept.compile(MODEL, shapes={"nope": [1]})
    with pytest.raises(ValueError, match=r"shapes\['N'\] must be >= 0"):
        incept.compile(DYNAMIC, shapes={"N": -1})
    with pytest.raises(TypeError, match=r"shapes\['N'\] must be a shape"):
        incept.compile(DYNAMIC, shapes={"N": "two"})


def test_bad_opt_level():
    with pytest.raises(ValueError, match="opt_level must be 0, 1 or 2, got 3"):
        incept.compile(MODEL, opt_level=3)


POOL = "mini_resnet_1/avg_pool_1/Mean:0"


def test_outputs_cut_the_model_at_a_feature_layer(x):
    # ONNX Runtime's output on the same cut (onnx.utils.extract_model), stored as a fixture.
    want = np.load(FIXTURES / "mini_resnet.avg_pool.ort_output.npy")
    model = incept.compile(MODEL, outputs=[POOL])
    assert [o.name for o in model.outputs] == [POOL]
    got = model.run({"input": x})[POOL]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
    both = incept.compile(MODEL, outputs=["output", POOL])
    assert [o.name for o in both.outputs] == ["output", POOL]


def test_unknown_output_names_the_closest(x):
    with pytest.raises(incept.InceptError, match=r"no value 'avg_pool/Mean'.*closest.*Mean:0"):
        incept.compile(MODEL, outputs=["avg_pool/Mean"])


def test_missing_model_file(tmp_path):
    missing = tmp_path / "missing.onnx"
    with pytest.raises(incept.InceptError, match=r"cannot read '.*missing\.onnx'"):
        incept.compile(missing)
    assert issubclass(incept.InceptError, RuntimeError)


def test_not_a_model(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(incept.InceptError, match=r"cannot compile '.*junk\.onnx'"):
        incept.compile(junk)


def test_load_errors(tmp_path):
    with pytest.raises(incept.InceptError, match=r"cannot read '.*missing\.incept'"):
        incept.load(tmp_path / "missing.incept")
    junk = tmp_path / "junk.incept"
    junk.write_bytes(b"not an artifact")
    with pytest.raises(incept.InceptError, match="not an incept artifact"):
        incept.load(junk)


def test_save_error(model, tmp_path):
    with pytest.raises(incept.InceptError, match=r"cannot write '.*no_such_dir"):
        model.save(tmp_path / "no_such_dir" / "m.incept")
    # A folder by the name: refused, and the folder stays as it was.
    (tmp_path / "d.incept").mkdir()
    with pytest.raises(incept.InceptError, match=r"cannot write"):
        model.save(tmp_path / "d.incept")
    assert (tmp_path / "d.incept").is_dir() and not any((tmp_path / "d.incept").iterdir())


def test_missing_input(model):
    with pytest.raises(ValueError, match=r"missing input 'input' \(float32\[1,3,64,64\]"):
        model.run({})
    with pytest.raises(ValueError, match="missing input 'input'"):
        model.run(None, {})


def test_unknown_input(model, x):
    with pytest.raises(ValueError, match=r"no input named 'imput' \(inputs: input\)"):
        model.run({"input": x, "imput": x})


def test_wrong_dtype(model, x):
    with pytest.raises(ValueError, match=r"input 'input': expected float32\[1,3,64,64\], got float64\[1,3,64,64\]"):
        model.run({"input": x.astype(np.float64)})
    big_endian = x.astype(">f4")
    with pytest.raises(ValueError, match=r"input 'input': expected float32\[1,3,64,64\], got >f4"):
        model.run({"input": big_endian})


def test_wrong_shape(model, x):
    with pytest.raises(ValueError, match=r"input 'input': expected float32\[1,3,64,64\], got float32\[3,64,64\]"):
        model.run({"input": x[0]})


def test_not_an_array(model, x):
    with pytest.raises(TypeError, match="input 'input': expected a numpy array, got list"):
        model.run({"input": x.tolist()})
    with pytest.raises(TypeError, match="feeds must be a dict"):
        model.run(None, [x])
    with pytest.raises(TypeError, match="run takes the feeds"):
        model.run()


def test_unknown_output(model, x):
    with pytest.raises(ValueError, match=r"no output named 'logits' \(outputs: output\)"):
        model.run(["logits"], {"input": x})


@pytest.mark.parametrize("threads", [1, 2])
def test_two_python_threads_at_once(threads, x):
    m = incept.compile(MODEL, threads=threads)
    inputs = [x, np.ascontiguousarray(x[:, :, ::-1, :])]
    expected = [m.run({"input": a})["output"] for a in inputs]
    assert not np.array_equal(expected[0], expected[1])
    start = threading.Barrier(2)
    failures = []

    def worker(k):
        start.wait()
        for _ in range(50):
            y = m.run({"input": inputs[k]})["output"]
            if not np.array_equal(y, expected[k]):
                failures.append(k)

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert failures == []


def test_run_releases_the_gil(x):
    # A batch of 256 makes one run long enough to see: if the run held the GIL, this thread
    # could not tick at all while it lasts.
    m = incept.compile(DYNAMIC, shapes={"N": 256}, threads=1)
    batch = np.ascontiguousarray(np.broadcast_to(x, (256, 3, 64, 64)))
    m.run({"input": batch})
    done = threading.Event()
    runs = []

    def worker():
        for _ in range(3):
            t0 = time.perf_counter()
            m.run({"input": batch})
            runs.append((t0, time.perf_counter()))
        done.set()

    ticks = []
    w = threading.Thread(target=worker)
    w.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
    w.join()
    # Holding the GIL through a run would leave no tick in its middle half. (Counting ticks
    # rather than timing the longest gap keeps a busy machine, which preempts this thread now
    # and then, from failing the test.)
    ticks = np.array(ticks)
    for t0, t1 in runs:
        q = (t1 - t0) / 4
        inside = np.count_nonzero((ticks > t0 + q) & (ticks < t1 - q))
        assert inside >= 10, f"{inside} ticks in the middle of a {t1 - t0:.3f} s run: the run held the GIL"


def bf16_model(**kwargs):
    """The fixture compiled in bf16, or a skip when this CPU has no bf16 instructions."""
    try:
        return incept.compile(MODEL, precision="bf16", **kwargs)
    except incept.InceptError as e:
        if "needs a CPU with AVX512-BF16 or AMX-BF16" in str(e):
            pytest.skip("this CPU runs no bf16 tier")
        raise


def test_bf16_precision(x, ort_output):
    m = bf16_model()
    y = m.run({"input": x})["output"]
    # bf16 rounding moves the output by far more than f32 would, but not the answer.
    scale = np.abs(ort_output).max()
    assert np.abs(y - ort_output).max() <= 2e-2 * scale
    assert np.argmax(y) == np.argmax(ort_output)
    assert not np.array_equal(y, incept.compile(MODEL).run({"input": x})["output"])
    with pytest.raises(ValueError, match=r"precision: unknown precision 'fp16' \(f32, bf16, auto, int8\)"):
        incept.compile(MODEL, precision="fp16")
    with pytest.raises(ValueError, match="tolerance is the bound of precision"):
        incept.compile(MODEL, tolerance=1e-3)
    auto = incept.compile(MODEL, precision="auto", tolerance=5e-4)
    assert np.argmax(auto.run({"input": x})["output"]) == np.argmax(ort_output)


@pytest.mark.parametrize("threads", [1, 2])
def test_bf16_runs_survive_signals_from_several_threads(threads, x):
    """Python handlers run on the thread's alternate signal stack, which faulthandler (on under
    pytest) makes small; with AMX tiles live, a signal frame larger than it would kill the
    process. Timer ticks every millisecond and SIGINTs while two threads run a bf16 model."""
    import os
    import signal

    m = bf16_model(threads=threads)
    expected = m.run({"input": x})["output"]
    ticks = []
    interrupts = []
    old_alarm = signal.signal(signal.SIGALRM, lambda *_: ticks.append(1))
    old_int = signal.signal(signal.SIGINT, lambda *_: interrupts.append(1))
    failures = []
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)

        def worker():
            for _ in range(200):
                if not np.array_equal(m.run({"input": x})["output"], expected):
                    failures.append(1)

        workers = [threading.Thread(target=worker) for _ in range(2)]
        for w in workers:
            w.start()
        for _ in range(20):
            os.kill(os.getpid(), signal.SIGINT)
            # The main thread runs the model too, so signals also land while it is in a run.
            m.run({"input": x})
        for w in workers:
            w.join()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old_alarm)
        signal.signal(signal.SIGINT, old_int)
    assert failures == []
    assert len(interrupts) == 20
    assert len(ticks) > 0
