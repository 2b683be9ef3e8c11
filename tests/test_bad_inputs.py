"""Every bad input a newcomer found (issue 12) gets a clear error naming the argument, at once.

Each case was a raw KeyError / AttributeError / numpy message, a silent wrong answer, or a run
that ground for minutes. Models are tiny so the file runs in seconds (warm numba cache).
"""

import json
import os
import time
import warnings
import zipfile

import numpy as np
import pytest

import ufm
import ufm.bridge as br
import ufm.theory as T
from ufm.bridge.safetensors import write_safetensors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_RUN = os.path.join(ROOT, "tests", "data", "transformer_factorial_adamw.npz")

PROBLEM = ufm.settings.factorial((3, 3))
MODEL = ufm.UFM(PROBLEM, lambda_W=1e-3, lambda_H=1e-3, coupling=PROBLEM.coupling("attribute", 1.0))
X0 = MODEL.init(8, seed=0)
MSE = ufm.UFM(ufm.settings.balanced(3), loss="mse", lambda_W=1e-3, lambda_H=1e-3)
BIG = ufm.UFM(ufm.settings.balanced(256))                # N = 256: one saved gram_H is 512 KiB
BIG_X0 = BIG.init(4, seed=0)


# ------------------------------------------------------------------------------------------
# the listed API cases
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, exc, words", [
    (lambda: ufm.Problem.from_dict({}), ValueError, ("d:", "'Y'")),
    (lambda: ufm.Problem.from_dict([1]), TypeError, ("d:", "mapping")),
    (lambda: ufm.Problem.from_dict({"Y": np.eye(2), "colour": 1}), ValueError, ("unknown key", "colour")),
    (lambda: MODEL.init(8, seed="abc"), TypeError, ("seed:", "'abc'")),
    (lambda: MODEL.init(8, seed=-1), ValueError, ("seed:", "-1")),
    (lambda: ufm.train(MODEL, X0, 5, 0.1, optimizer="adam", betas=(0.9,)), TypeError, ("betas:", "pair")),
    (lambda: ufm.train(MODEL, X0, 5, 0.1, optimizer="adam", betas=0.9), TypeError, ("betas:",)),
    (lambda: T.fixed_point("model"), TypeError, ("model:", "ufm.UFM", "str")),
    (lambda: T.bind("x"), TypeError, ("problem:", "ufm.Problem", "str")),
    (lambda: T.semantic_peak(MODEL, "x"), TypeError, ("scale:",)),
    (lambda: T.semantic_peak(MODEL, scale=-1), ValueError, ("scale:", "> 0")),
    (lambda: T.semantic_peak("m", 1e-3), TypeError, ("model:",)),
    (lambda: T.saxe_modes(MSE, "x"), TypeError, ("u_start:",)),
    (lambda: T.saxe_modes(MSE, -1e-3), ValueError, ("u_start:", "> 0")),
    (lambda: T.saxe_modes(MSE, [1e-3, 1e-3, 1e-3, 1e-3, 1e-3]), ValueError, ("u_start:", "per mode")),
    (lambda: br.load(REAL_RUN, mmap="sometimes"), ValueError, ("mmap:", "'sometimes'")),
    (lambda: br.load(REAL_RUN, h_layout="diagonal"), ValueError, ("h_layout:",)),
    (lambda: br.load(REAL_RUN, meta=["x"]), TypeError, ("meta:",)),
    (lambda: br.load(3), TypeError, ("path:",)),
])
def test_api_errors_name_the_argument(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert all(w in str(info.value) for w in words), str(info.value)


def test_semantic_peak_with_a_negative_scale_is_not_the_value_for_plus_one():
    # it used to return the prediction for scale = +1 (the scale enters squared)
    with pytest.raises(ValueError, match="scale"):
        T.semantic_peak(MODEL, scale=-1.0)


@pytest.mark.parametrize("threshold", [-1, 0, 0.0])
def test_transient_summary_needs_a_positive_threshold(threshold):
    tr = ufm.solve(MODEL, X0, [1.0, 2.0, 4.0], save="gram_H")
    with pytest.raises(ValueError, match="threshold: expected a number > 0"):
        tr.transient_summary(threshold=threshold)
    with pytest.raises(ValueError, match="threshold"):
        ufm.metrics.transient_summary([1.0, 2.0], [0.1, 0.0], threshold=threshold)


def test_fit_with_a_negative_max_time_is_refused_not_returned_unfitted():
    run = br.load(REAL_RUN)
    for bad, exc in ((-1, ValueError), (0, ValueError), ("soon", TypeError)):
        with pytest.raises(exc, match="max_time"):
            br.fit(run, max_time=bad)
    with pytest.raises(ValueError, match="max_nfev"):
        br.fit(run, max_nfev=0)


def test_second_export_into_a_checkpoint_folder_names_export_s_own_argument(tmp_path):
    run = br.load(REAL_RUN)
    arrays = dict(steps=run.steps[:3], H=run.H[:3], W=run.W[:3], labels=run.labels)
    br.export(tmp_path / "ckpts", **arrays)
    with pytest.raises(ValueError) as info:
        br.export(tmp_path / "ckpts", **arrays)
    msg = str(info.value)
    assert "append=True" in msg and "resume" not in msg
    with pytest.raises(ValueError) as info:
        br.CheckpointWriter(tmp_path / "ckpts", labels=run.labels)
    assert "resume=True" in str(info.value) and "append" not in str(info.value)


def test_train_error_time_is_ode_time_and_the_step_is_separate():
    model = ufm.UFM(ufm.settings.balanced(4), loss="mse")
    x0 = model.init(6, scale=1.0, seed=2)
    lr = 5.0
    with pytest.raises(ufm.IntegrationError) as info:
        ufm.train(model, x0, 199, lr=lr, save="all")
    err = info.value
    assert err.step is not None and err.t == lr * err.step          # the trajectory's time axis
    assert err.trajectory.t[-1] < err.t
    assert f"step {err.step}" in str(err) and f"t = {lr * err.step:g}" in str(err)


def test_adam_at_a_huge_learning_rate_warns():
    with pytest.warns(UserWarning, match=r"objective rose from 2\.197 .* lr = 1000"):
        tr = ufm.train(MODEL, X0, 300, 1e3, optimizer="adam")
    assert tr.loss[-1] > 1e5 * tr.loss[0]                            # measured 3.6e6 vs 2.2
    with warnings.catch_warnings():
        warnings.simplefilter("error")                              # a sane rate stays silent
        tr = ufm.train(MODEL, X0, 300, 1e-2, optimizer="adam")
    assert tr.loss[-1] < tr.loss[0]


# ------------------------------------------------------------------------------------------
# hangs: size guards, start state, horizon
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, words", [
    (lambda: ufm.settings.factorial((1000, 1000)), ("levels:", "1,000,000 contexts", "4096")),
    (lambda: ufm.settings.factorial((10,) * 40), ("levels:",)),
    (lambda: ufm.settings.factorial((3, 3), samples_per_context=1000), ("samples_per_context:", "9,000")),
    (lambda: ufm.settings.hierarchy(2, 10 ** 9), ("branching, depth:",)),
    (lambda: ufm.settings.hierarchy(4, 7), ("branching, depth:", "16,384")),
    (lambda: ufm.settings.balanced(10 ** 6), ("K, n:",)),
    (lambda: ufm.settings.sequences((10, 10, 10), 10), ("classes, tokens_per_class:",)),
    (lambda: ufm.settings.sequences((100,) * 4, 10, n_contexts=5), ("classes, tokens_per_class:",)),
    (lambda: MODEL.init(10 ** 12), ("d:", "TiB", "memory")),
    (lambda: ufm.solve(BIG, BIG_X0, np.geomspace(1, 1e4, 60_000)), ("t, save:", "60000 save times", "memory")),
])
def test_sizes_are_estimated_before_allocating(call, words):
    started = time.perf_counter()
    with pytest.raises(ValueError) as info:
        call()
    assert time.perf_counter() - started < 2        # factorial((1000, 1000)) used to run out of memory
    assert all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.parametrize("space", ["parameters", "gram"])
@pytest.mark.parametrize("scale", [1e200, 1e70])
def test_a_start_beyond_the_divergence_bound_fails_at_once(space, scale):
    big = ufm.State(X0.W * scale, X0.H * scale)
    started = time.perf_counter()
    with pytest.raises(ufm.IntegrationError) as info:
        ufm.solve(MODEL, big, [1.0, 10.0], space=space)
    assert time.perf_counter() - started < 2        # 1e200 used to grind ~8 minutes into max_steps
    err = info.value
    assert err.reason == "nonfinite" and err.t == 0.0 and len(err.trajectory) == 0
    assert "cannot start" in str(err) and "init.W" in str(err) and "1e+60" in str(err)


def test_a_gram_space_start_whose_grams_overflow_the_bound_fails_at_once():
    big = ufm.State(X0.W * 1e40, X0.H * 1e40)        # entries 1e40, Grams 1e80
    with pytest.raises(ufm.IntegrationError, match="Gram-space image"):
        ufm.solve(MODEL, big, [1.0], space="gram")


def test_a_start_beyond_the_bound_fails_at_once_in_train():
    big = ufm.State(X0.W * 1e200, X0.H * 1e200)
    with pytest.raises(ufm.IntegrationError, match="cannot start"):
        ufm.train(MODEL, big, 10, 0.1)


def test_a_far_horizon_is_named_as_the_problem():
    with pytest.raises(ufm.IntegrationError) as info:
        ufm.solve(MODEL, X0, [1e-2, 1e300])
    msg = str(info.value)
    assert info.value.reason == "step_underflow"
    assert "the save horizon is the problem" in msg and "t[-1] = 1e+300" in msg
    # a horizon the driver can reach is unaffected
    assert len(ufm.solve(MODEL, X0, [1e-2, 1e6], save="gram_H")) == 2


# ------------------------------------------------------------------------------------------
# trajectory files
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tr = ufm.solve(MODEL, X0, np.geomspace(1e-2, 1e2, 10), save="all")
    path = tmp_path_factory.mktemp("traj") / "tr.npz"
    tr.save(path)
    return str(path)


def _rewrite(src, dst, change):
    """Copy an .npz trajectory, applying ``change(arrays)`` to its dict of arrays."""
    with np.load(src, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    np.savez(dst, **arrays)
    return str(dst)


def _set_meta(arrays, **changes):
    meta = json.loads(str(arrays["meta"]))
    meta.update(changes)
    arrays["meta"] = np.array(json.dumps(meta))


def _bytes(data):
    def make(src, dst):
        dst.write_bytes(data(open(src, "rb").read()))
        return str(dst)
    return make


CORRUPTIONS = {
    "truncated": (_bytes(lambda raw: raw[:300]), "corrupt or truncated"),
    "empty file": (_bytes(lambda raw: b""), "cannot read"),
    "not a zip": (_bytes(lambda raw: b"PK\x03\x04" + b"\x00" * 64), "cannot read"),
    "no meta": (lambda src, dst: _rewrite(src, dst, lambda a: a.pop("meta")), "no 'meta' entry"),
    "meta not JSON": (lambda src, dst: _rewrite(src, dst, lambda a: a.update(meta=np.array("{oops"))),
                      "not valid JSON"),
    "meta a list": (lambda src, dst: _rewrite(src, dst, lambda a: a.update(meta=np.array("[1]"))), "JSON object"),
    "meta numbers": (lambda src, dst: _rewrite(src, dst, lambda a: a.update(meta=np.arange(3))), "JSON string"),
    "newer version": (lambda src, dst: _rewrite(src, dst, lambda a: _set_meta(a, version=99)), "upgrade"),
    "other format": (lambda src, dst: _rewrite(src, dst, lambda a: _set_meta(a, format="x")), "format 'x'"),
    "info a list": (lambda src, dst: _rewrite(src, dst, lambda a: _set_meta(a, info=[1])), "'info'"),
    "model a string": (lambda src, dst: _rewrite(src, dst, lambda a: _set_meta(a, model="ufm")), "'model'"),
    "model bad param": (lambda src, dst: _rewrite(src, dst, lambda a: _set_meta(
        a, model={**json.loads(str(a["meta"]))["model"], "lambda_W": -1})), "stored model is invalid"),
    "problem bad Y": (lambda src, dst: _rewrite(src, dst, lambda a: a.update({"problem/Y": np.full((9, 9), np.nan)})),
                      "stored problem is invalid"),
    "no t": (lambda src, dst: _rewrite(src, dst, lambda a: a.pop("t")), "'t' is missing"),
    "unknown entry": (lambda src, dst: _rewrite(src, dst, lambda a: a.update(extra=np.zeros(2))), "unknown entry"),
    "string array": (lambda src, dst: _rewrite(src, dst, lambda a: a.update(loss=np.array(["a"] * 10))),
                     "expected numbers"),
    "gram_H 3 of 10": (lambda src, dst: _rewrite(src, dst, lambda a: a.update(gram_H=a["gram_H"][:3])),
                       "'gram_H' has shape (3, 9, 9), inconsistent with T = 10 save times"),
    "W wrong K": (lambda src, dst: _rewrite(src, dst, lambda a: a.update(W=a["W"][:, :4])), "K = 9 classes"),
    "H wrong rank": (lambda src, dst: _rewrite(src, dst, lambda a: a.update(H=a["H"][0])), "'H' must have shape"),
    "t decreasing": (lambda src, dst: _rewrite(src, dst, lambda a: a.update(t=a["t"][::-1].copy())),
                     "strictly increasing"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupt_trajectory_files_raise_a_value_error_naming_the_file(saved, tmp_path, name):
    make, words = CORRUPTIONS[name]
    path = make(saved, tmp_path / "bad.npz")
    with pytest.raises(ValueError) as info:
        ufm.Trajectory.load(path)
    assert type(info.value) is ValueError          # not EOFError / BadZipFile / JSONDecodeError / KeyError
    assert str(path) in str(info.value) and words in str(info.value), str(info.value)


def test_a_corrupt_member_is_named(saved, tmp_path):
    """Flip bytes inside the stored (uncompressed) loss array: the zip CRC check fails on read."""
    raw = bytearray(open(saved, "rb").read())
    with zipfile.ZipFile(saved) as zf:
        info = zf.getinfo("loss.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 130
    raw[start:start + 8] = b"\xff" * 8
    bad = tmp_path / "crc.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"entry 'loss'.*corrupt or truncated"):
        ufm.Trajectory.load(bad)


def test_a_valid_file_still_round_trips(saved):
    tr = ufm.Trajectory.load(saved)
    assert len(tr) == 10 and tr.model == MODEL and tr.gram_H.shape == (10, 9, 9)


# ------------------------------------------------------------------------------------------
# checkpoint folders and safetensors metadata
# ------------------------------------------------------------------------------------------

def _folder(tmp_path, steps):
    run = br.load(REAL_RUN)
    folder = tmp_path / "ckpts"
    w = br.CheckpointWriter(folder, labels=run.labels)
    for j, s in enumerate(steps):
        w.append(s, run.H[j], run.W[j])
    return folder


def test_a_checkpoint_folder_with_a_missing_middle_checkpoint_warns(tmp_path):
    folder = _folder(tmp_path, [0, 10, 20, 30, 40, 50])
    os.remove(folder / "ckpt_30.npz")
    with pytest.warns(UserWarning, match=r"spaced every 10 steps but step\(s\) 30 are missing"):
        run = br.load(folder)
    assert list(run.steps) == [0, 10, 20, 40, 50]


@pytest.mark.parametrize("steps", [[0, 10, 20, 30, 40], [1, 2, 4, 8, 16, 32], [0, 1, 2, 3, 5, 10, 20, 30]])
def test_complete_checkpoint_folders_load_silently(tmp_path, steps):
    folder = _folder(tmp_path, steps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(br.load(folder).steps) == steps


@pytest.mark.parametrize("value", [3, 1.5, None, ["a"], {"k": "v"}, True])
def test_non_string_safetensors_metadata_is_rejected(tmp_path, value):
    path = tmp_path / "bad.safetensors"
    write_safetensors(path, {"a": np.zeros(2, dtype=np.float32)})
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["__metadata__"] = {"lr": value}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    with pytest.raises(br.FormatError, match=r"__metadata__\['lr'\]: expected a string") as info:
        br.safetensors.read_safetensors(path)
    assert str(path) in str(info.value)
