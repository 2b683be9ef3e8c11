"""ufm.bridge I/O: export -> load round trips for every format and layout, the pure-numpy
safetensors reader (bf16/f16 written without torch), Run -> Trajectory, and the observables
against the core metrics."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

import ufm
import ufm.bridge as br
from ufm.bridge.observables import observe
from ufm.bridge.safetensors import from_bfloat16_bits, read_safetensors, to_bfloat16_bits, write_safetensors


def make_fields(T=6, N=6, K=6, d=8, seed=0, soft=False, bias=False, kernel="stack"):
    """Arrays of a small run on factorial (2, 3): rows are samples, H (T, N, d), W (T, K, d)."""
    rng = np.random.default_rng(seed)
    prob = ufm.settings.factorial((2, 3))
    f = dict(steps=np.array([0, 1, 3, 10, 30, 100])[:T], H=rng.normal(size=(T, N, d)).astype(np.float32),
             W=rng.normal(size=(T, K, d)).astype(np.float32), attributes=prob.attributes,
             loss=np.linspace(2.0, 0.1, T), lr=0.05, weight_decay=1e-3, meta={"task": "unit", "seed": 3})
    if soft:
        Y = rng.random((N, K))
        f["Y"] = Y / Y.sum(axis=1, keepdims=True)
    else:
        f["labels"] = prob.labels
    if bias:
        f["b"] = rng.normal(size=(T, K)).astype(np.float32)
    if kernel == "stack":
        X = rng.normal(size=(3, N, N))
        f["kernel"] = X @ X.transpose(0, 2, 1)
        f["kernel_steps"] = np.array([0, 10, 100])
    return f


def assert_same(run, f, rtol=0.0, atol=0.0):
    np.testing.assert_array_equal(run.steps, f["steps"])
    np.testing.assert_allclose(run.H, f["H"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(run.W, f["W"], rtol=rtol, atol=atol)
    for k in ("labels", "attributes"):
        if k in f:
            np.testing.assert_array_equal(getattr(run, k), f[k])
    if "Y" in f:
        np.testing.assert_allclose(run.Y, f["Y"], rtol=1e-6)
    if "b" in f:
        np.testing.assert_allclose(run.b, f["b"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(run.loss, f["loss"])
    if "kernel" in f:
        np.testing.assert_allclose(run.kernel, f["kernel"], rtol=1e-6)
        np.testing.assert_array_equal(run.kernel_steps, f["kernel_steps"])
    assert run.lr == pytest.approx(0.05) and run.weight_decay == pytest.approx(1e-3)
    assert run.meta["task"] == "unit" and run.meta["seed"] == 3
    assert run.meta["format"] == "ufm-run" and run.meta["version"] == 1


# ------------------------------------------------------------------------------------------
# round trips
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["run.npz", "run.safetensors", "run.h5", "ckpts"])
@pytest.mark.parametrize("variant", ["labels", "soft+bias"])
def test_round_trip_every_format(tmp_path, name, variant):
    f = make_fields(soft=variant != "labels", bias=variant != "labels")
    path = br.export(tmp_path / name, **f)
    assert br.detect(path) == {"run.npz": "npz", "run.safetensors": "safetensors", "run.h5": "hdf5",
                               "ckpts": "checkpoints"}[name]
    run = br.load(path)
    assert_same(run, f)
    assert (run.T, run.N, run.K, run.d) == (6, 6, 6, 8)
    assert run.H.dtype == np.float32                     # stored precision kept


def test_round_trip_checkpoint_files_as_safetensors(tmp_path):
    f = make_fields(bias=True)
    br.export(tmp_path / "d", checkpoint_format="safetensors", **f)
    assert sorted(os.listdir(tmp_path / "d"))[:2] == ["ckpt_0.safetensors", "ckpt_1.safetensors"]
    assert_same(br.load(tmp_path / "d"), f)


@pytest.mark.parametrize("dtype,tol", [("float16", 1e-3), ("bfloat16", 8e-3)])
def test_half_precision_safetensors_written_without_torch(tmp_path, dtype, tol):
    """H, W stored as F16 / BF16 (by our own writer) come back as float32 within half-precision
    rounding, relative to each entry."""
    f = make_fields()
    path = br.export(tmp_path / "h.safetensors", dtype=dtype, **f)
    arrays, meta, dtypes = read_safetensors(path)
    assert dtypes["H"] == {"float16": "F16", "bfloat16": "BF16"}[dtype]
    assert meta["format"] == "ufm-run" and meta["lr"] == 0.05
    run = br.load(path)
    assert run.H.dtype == np.float32
    assert_same(run, f, rtol=tol, atol=1e-6)
    assert not np.array_equal(run.H, f["H"])             # it really was rounded


def test_bfloat16_bits_are_exact_and_round_to_nearest_even():
    vals = np.array([1.0, -2.0, 3.140625, 0.0, -0.0, np.inf, 65280.0, 2.0 ** -126], dtype=np.float32)
    bits = to_bfloat16_bits(vals)
    assert bits[:3].tolist() == [0x3F80, 0xC000, 0x4049]
    np.testing.assert_array_equal(from_bfloat16_bits(bits), vals)   # representable values are exact
    # 1 + 2^-8 lies halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to even (1.0)
    assert to_bfloat16_bits(np.float32(1 + 2 ** -8)).tolist() == 0x3F80
    assert to_bfloat16_bits(np.float32(1 + 3 * 2 ** -8)).tolist() == 0x3F82
    assert np.isnan(from_bfloat16_bits(to_bfloat16_bits(np.float32(np.nan))))


def test_safetensors_memory_maps_and_validates_layout(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    p = write_safetensors(tmp_path / "x.safetensors", {"a": a, "i": np.arange(3)}, {"k": "v", "n": 2})
    arrays, meta, dtypes = read_safetensors(p, mmap=True)
    assert isinstance(arrays["a"], np.memmap) and np.array_equal(arrays["a"], a)
    assert meta == {"k": "v", "n": 2} and dtypes == {"a": "F32", "i": "I64"}
    # the header is 8-byte aligned and the offsets cover the buffer
    raw = open(p, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and len(raw) == 8 + n + a.nbytes + 24


def test_checkpoint_writer_appends_and_resumes(tmp_path):
    f = make_fields(kernel=None)
    w = br.CheckpointWriter(tmp_path / "run", labels=f["labels"], attributes=f["attributes"], lr=0.05,
                            weight_decay=1e-3, meta={"task": "unit", "seed": 3})
    for j in range(3):
        kern = np.eye(6) * (j + 1) if j != 1 else None
        w.append(int(f["steps"][j]), f["H"][j], f["W"][j], loss=f["loss"][j], kernel=kern)
    assert w.last_step == 3
    with pytest.raises(br.FormatError, match="not after the last written step 3"):
        w.append(2, f["H"][3], f["W"][3], loss=1.0)
    with pytest.raises(ValueError, match="resume=True"):
        br.CheckpointWriter(tmp_path / "run", labels=f["labels"])
    w2 = br.CheckpointWriter(tmp_path / "run", labels=f["labels"], resume=True)   # e.g. a restarted job
    for j in range(3, 6):
        w2.append(int(f["steps"][j]), f["H"][j], f["W"][j], loss=f["loss"][j])
    run = br.load(tmp_path / "run")
    assert_same(run, f)
    np.testing.assert_array_equal(run.kernel_steps, [0, 3])
    np.testing.assert_allclose(run.kernel[1], 3 * np.eye(6))
    with pytest.raises(br.FormatError, match="labels: differs"):
        br.CheckpointWriter(tmp_path / "run", labels=f["labels"][::-1], resume=True)


def test_export_append_to_directory(tmp_path):
    f = make_fields(kernel=None)
    first = {k: (v[:3] if k in ("steps", "H", "W", "loss") else v) for k, v in f.items()}
    rest = {k: (v[3:] if k in ("steps", "H", "W", "loss") else v) for k, v in f.items()}
    br.export(tmp_path / "d", **first)
    with pytest.raises(ValueError, match="append=True"):
        br.export(tmp_path / "d", **rest)
    br.export(tmp_path / "d", append=True, **rest)
    assert_same(br.load(tmp_path / "d"), f)


def test_ntp_stacked_layout(tmp_path):
    """W_list (T, K, d), H_list as the authors' (T, d, N) columns, rec (T, 2) = (step, loss)."""
    f = make_fields(N=6, d=5, kernel=None)
    H_cols = f["H"].transpose(0, 2, 1)
    np.save(tmp_path / "W_list_a.npy", f["W"])
    np.save(tmp_path / "H_list_a.npy", H_cols)
    np.save(tmp_path / "rec_a.npy", np.stack([f["steps"], f["loss"]], axis=1))
    np.save(tmp_path / "labels_a.npy", f["labels"])
    run = br.load(tmp_path, attributes=f["attributes"], meta={"lr": 0.05, "weight_decay": 1e-3, "task": "unit",
                                                              "seed": 3})
    assert_same(run, f)
    assert run.meta["layout"] == "ntp-stacked" and run.meta["tag"] == "a"
    # a second run in the folder makes the tag necessary; a pickled record needs allow_pickle
    np.save(tmp_path / "W_list_b.npy", f["W"])
    np.save(tmp_path / "H_list_b.npy", f["H"])             # rows layout this time
    np.save(tmp_path / "rec_b.npy", np.array({"steps": f["steps"], "loss": f["loss"]}, dtype=object))
    with pytest.raises(br.FormatError, match="pass tag="):
        br.load(tmp_path)
    with pytest.raises(br.FormatError, match="allow_pickle=True"):
        br.load(tmp_path, tag="b", labels=f["labels"])
    run_b = br.load(tmp_path / "W_list_b.npy", allow_pickle=True, labels=f["labels"])
    np.testing.assert_allclose(run_b.H, f["H"])
    np.testing.assert_allclose(run_b.loss, f["loss"])


def test_ntp_layout_ambiguous_orientation_needs_h_layout(tmp_path):
    f = make_fields(N=6, d=6, kernel=None)
    np.save(tmp_path / "W_list_x.npy", f["W"])
    np.save(tmp_path / "H_list_x.npy", f["H"].transpose(0, 2, 1))
    with pytest.raises(br.FormatError, match="h_layout"):
        br.load(tmp_path, labels=f["labels"])
    run = br.load(tmp_path, labels=f["labels"], h_layout="columns")
    np.testing.assert_allclose(run.H, f["H"])
    assert run.meta["steps_are_indices"] is True              # no rec file: steps are 0 … T−1


def test_export_accepts_array_likes(tmp_path):
    """Lists and objects with .detach().cpu().numpy() (duck-typed torch tensors) are converted."""
    class FakeTensor:
        def __init__(self, a):
            self.a = np.asarray(a)
            self.dtype = "torch.float32"

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.a

    f = make_fields(kernel=None)
    g = dict(f, H=FakeTensor(f["H"]), W=[w.tolist() for w in f["W"]], steps=list(f["steps"]))
    run = br.load(br.export(tmp_path / "a.npz", **g))
    np.testing.assert_allclose(run.W, f["W"], rtol=1e-6)
    np.testing.assert_allclose(run.H, f["H"])


# ------------------------------------------------------------------------------------------
# Run -> Trajectory and observables
# ------------------------------------------------------------------------------------------

def test_trajectory_converts_rows_to_core_grams():
    f = make_fields(bias=True)
    run = br.Run(**f)
    tr = run.trajectory()
    H, W, b = f["H"].astype(float), f["W"].astype(float), f["b"].astype(float)
    np.testing.assert_allclose(tr.gram_H, H @ H.transpose(0, 2, 1), rtol=1e-12)
    np.testing.assert_allclose(tr.gram_W, W @ W.transpose(0, 2, 1), rtol=1e-12)
    np.testing.assert_allclose(tr.logits, W @ H.transpose(0, 2, 1) + b[:, :, None], rtol=1e-12)
    assert tr.logits.shape == (6, 6, 6)                    # (T, K, N): one column per context
    np.testing.assert_array_equal(tr.steps, f["steps"])
    np.testing.assert_allclose(run.trajectory("lr").t, 0.05 * f["steps"])
    assert tr.problem.relations is not None and tr.problem.relation_names[0] == "identity"
    # the attribute relations of factorial (2, 3) are those of ufm.settings.factorial
    assert sorted(tr.problem.relation_names) == sorted(ufm.settings.factorial((2, 3)).relation_names)
    assert np.isfinite(tr.metric("nc3")).all()


def test_observables_agree_with_core_metrics():
    run = br.Run(**make_fields(T=6, d=12))
    tr = run.trajectory()
    obs = observe(tr.gram_H, tr.gram_W, tr.problem, ("semantic_gap", "etf_distance", "effective_rank", "norms",
                                                      "relations", "gram_H"))
    np.testing.assert_allclose(obs["semantic_gap"][:, 0], tr.metric("semantic_gap"), atol=1e-12)
    np.testing.assert_allclose(obs["etf_distance"][:, 0], tr.metric("etf_distance"), atol=1e-12)
    np.testing.assert_allclose(obs["effective_rank"][:, 0], tr.metric("effective_rank"), rtol=1e-10)
    np.testing.assert_allclose(np.exp(obs["norms"][:, 0]), tr.metric("norm_H") / np.sqrt(run.N), rtol=1e-12)
    cos = ufm.metrics.cosine(tr.gram_H[2], centred=True)     # relations are centred, as the gap
    for r, R in enumerate(tr.problem.relations[1:]):
        assert obs["relations"][2, r] == pytest.approx(cos[R.astype(bool)].mean(), abs=1e-12)
    assert obs["gram_H"].shape == (6, 15)


def test_from_trajectory_reproduces_grams_of_a_gram_space_solve():
    p = ufm.settings.factorial((2, 3))
    m = ufm.UFM(p, lambda_W=1e-2, lambda_H=1e-2, coupling=p.kernel("attribute", 1.0))
    tr = ufm.solve(m, m.init(12, scale=0.1, seed=1), np.array([0.0, 1.0, 10.0]), space="gram")
    run = br.Run.from_trajectory(tr, steps=[0, 10, 100])
    g = run.grams()
    np.testing.assert_allclose(g["gram_H"], tr.gram_H, atol=1e-12)
    np.testing.assert_allclose(g["gram_W"], tr.gram_W, atol=1e-12)
    np.testing.assert_allclose(g["logits"], tr.logits, atol=1e-12)
    assert run.d == p.K + p.N


def test_summary_and_plot(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    run = br.Run(**make_fields())
    text = run.summary()
    assert "T = 6 checkpoints" in text and "transient" in text and "kernel     3 logged" in text
    fig = run.plot()
    fig.savefig(tmp_path / "x.png")
    assert os.path.getsize(tmp_path / "x.png") > 1000
