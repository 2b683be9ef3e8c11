"""ufm.bridge I/O: export -> load round trips for every format and layout, the pure-numpy
safetensors reader (bf16/f16 written without torch), Run -> Trajectory, and the observables
against the core metrics."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

import independent
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
    # NC3 from the Grams and logits equals NC3 from the raw features (bias or not)
    nc3 = [independent.nc3(W[j], H[j].T, f["labels"]) for j in range(6)]
    np.testing.assert_allclose(tr.metric("nc3"), nc3, rtol=1e-14)    # measured 2e-16; values 1.7 … 2.3


def test_observables_agree_with_core_metrics():
    run = br.Run(**make_fields(T=6, d=12))
    tr = run.trajectory()
    obs = observe(tr.gram_H, tr.gram_W, tr.problem, ("semantic_gap", "etf_distance", "effective_rank", "norms",
                                                      "relations", "gram_H"))
    # two implementations (vectorised over time here, per Gram in ufm.metrics): measured
    # agreement <= 2.2e-16, asserted to 2e-15
    np.testing.assert_allclose(obs["semantic_gap"][:, 0], tr.metric("semantic_gap"), rtol=0, atol=2e-15)
    np.testing.assert_allclose(obs["etf_distance"][:, 0], tr.metric("etf_distance"), rtol=0, atol=2e-15)
    np.testing.assert_allclose(obs["effective_rank"][:, 0], tr.metric("effective_rank"), rtol=2e-15)
    np.testing.assert_allclose(np.exp(obs["norms"][:, 0]), tr.metric("norm_H") / np.sqrt(run.N), rtol=2e-15)
    cos = ufm.metrics.cosine(tr.gram_H[2], centred=True)     # relations are centred, as the gap
    for r, R in enumerate(tr.problem.relations[1:]):
        assert obs["relations"][2, r] == pytest.approx(cos[R.astype(bool)].mean(), rel=0, abs=2e-15)
    # the Gram observable is the N(N−1)/2 centred cosines i < j in row-major order
    G = run.grams()["gram_H"]
    P = np.eye(6) - 1.0 / 6                                   # features minus their mean over contexts
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    expected = [[independent.cosine(P @ G[t] @ P, i, j) for i, j in pairs] for t in range(6)]
    np.testing.assert_allclose(obs["gram_H"], expected, rtol=0, atol=1e-15)   # measured 2e-16


def test_from_trajectory_reproduces_grams_of_a_gram_space_solve():
    p = ufm.settings.factorial((2, 3))
    m = ufm.UFM(p, lambda_W=1e-2, lambda_H=1e-2, coupling=p.coupling("attribute", 1.0))
    tr = ufm.solve(m, m.init(12, scale=0.1, seed=1), np.array([0.0, 1.0, 10.0]), space="gram")
    run = br.Run.from_trajectory(tr, steps=[0, 10, 100])
    g = run.grams()
    np.testing.assert_allclose(g["gram_H"], tr.gram_H, atol=1e-12)
    np.testing.assert_allclose(g["gram_W"], tr.gram_W, atol=1e-12)
    np.testing.assert_allclose(g["logits"], tr.logits, atol=1e-12)
    assert run.d == p.K + p.N


def run_metrics_from_rows(f) -> dict:
    """The per-checkpoint metrics of a run recomputed from its raw rows by tests/independent.py
    (the factorial (2, 3) run has K = N: no pairs are left out of the semantic gap)."""
    H, W = f["H"].astype(float), f["W"].astype(float)            # (T, N, d), (T, K, d)
    grams = H @ H.transpose(0, 2, 1)
    return {"loss": np.asarray(f["loss"], dtype=float),
            "semantic_gap": np.array([independent.semantic_gap(g, f["attributes"]) for g in grams]),
            "etf_distance": np.array([independent.etf_distance(g, f["labels"]) for g in grams]),
            "effective_rank": np.array([independent.effective_rank_of_features(h) for h in H]),
            "norm_H": np.sqrt(np.mean(np.sum(H ** 2, axis=2), axis=1)),   # rms row norms
            "norm_W": np.sqrt(np.mean(np.sum(W ** 2, axis=2), axis=1))}


def shared_attribute_counts(attributes) -> np.ndarray:
    """S_ij = number of attributes on which samples i and j agree (the attribute kernel AᵀA)."""
    a = np.asarray(attributes)
    return np.array([[float(np.sum(a[i] == a[j])) for j in range(len(a))] for i in range(len(a))])


def test_summary_prints_the_run_metrics():
    """Every number of run.summary() is the metric recomputed from the raw rows, printed to the
    summary's precision (compared as strings: the formatting of the independent value)."""
    f = make_fields()
    run = br.Run(**f)
    want = run_metrics_from_rows(f)
    lines = run.summary().splitlines()
    top = next(k for k, line in enumerate(lines) if line.split()[:1] == ["step"])
    names = lines[top].split()[1:]
    assert names == ["loss", "semantic_gap", "etf_distance", "effective_rank", "norm_H", "norm_W"]
    rows = [line.split() for line in lines[top + 1:top + 4]]
    peak = int(np.argmax(want["semantic_gap"]))
    assert [int(r[0]) for r in rows] == [f["steps"][0], f["steps"][peak], f["steps"][-1]]
    for r, j in zip(rows, (0, peak, len(f["steps"]) - 1)):
        assert r[1:] == [f"{want[name][j]:.4g}" for name in names], (j, r)
    ts = independent.transient(f["steps"], want["semantic_gap"], 0.02)
    assert ts["collapsed"]
    assert (f"transient  peak semantic gap {ts['peak']:.3f} (centred) at step {ts['t_peak']:g}; "
            f"falls below 0.02 at step {ts['t_collapse']:.3g}") in lines
    kern = f["kernel"]
    trace = np.trace(kern, axis1=1, axis2=2)
    S = shared_attribute_counts(f["attributes"])
    at = lines.index("kernel     3 logged, steps 0 … 100")
    assert lines[at + 1].split() == ["step", "trace/first", "CKA(Θ₀)", "CKA(AᵀA)"]
    for row, j, step in zip(lines[at + 2:at + 5], range(3), (0, 10, 100)):
        assert row.split() == [str(step), f"{trace[j] / trace[0]:.3g}",
                               f"{independent.kernel_alignment(kern[j], kern[0]):.3f}",
                               f"{independent.kernel_alignment(kern[j], S):.3f}"], row


def test_plot_draws_the_run_metrics(tmp_path):
    """Each panel of run.plot() draws the metric recomputed from the raw rows against the
    steps (measured agreement <= 9e-16 relative; asserted to 1e-14)."""
    import matplotlib
    matplotlib.use("Agg")
    f = make_fields()
    run = br.Run(**f)
    want = run_metrics_from_rows(f)
    fig = run.plot()
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible() and ax.get_title()}
    assert set(panels) == {"semantic gap (centred)", "ETF distance", "entropy effective rank of G_H", "rms norms",
                           "loss", "kernel"}
    curves = {"semantic gap (centred)": ["semantic_gap"], "ETF distance": ["etf_distance"],
              "entropy effective rank of G_H": ["effective_rank"], "rms norms": ["norm_H", "norm_W"],
              "loss": ["loss"]}
    for title, names in curves.items():
        lines = panels[title].get_lines()
        assert len(lines) == len(names), title
        for line, name in zip(lines, names):
            np.testing.assert_array_equal(line.get_xdata(), f["steps"])
            np.testing.assert_allclose(line.get_ydata(), want[name], rtol=1e-14, atol=0, err_msg=title)
    trace = np.trace(f["kernel"], axis1=1, axis2=2)
    (trace_line,) = panels["kernel"].get_lines()
    np.testing.assert_array_equal(trace_line.get_xdata(), f["kernel_steps"])
    np.testing.assert_allclose(trace_line.get_ydata(), trace / trace[0], rtol=1e-14)
    twin = next(ax for ax in fig.axes if ax is not panels["kernel"] and ax.get_visible() and not ax.get_title()
                and ax.bbox.bounds == panels["kernel"].bbox.bounds)
    S = shared_attribute_counts(f["attributes"])
    to_first, to_attributes = twin.get_lines()
    np.testing.assert_allclose(to_first.get_ydata(), [independent.kernel_alignment(k, f["kernel"][0])
                                                      for k in f["kernel"]], rtol=1e-14)
    np.testing.assert_allclose(to_attributes.get_ydata(), [independent.kernel_alignment(k, S) for k in f["kernel"]],
                               rtol=1e-14)
    fig.savefig(tmp_path / "x.png")                      # and it renders


# ------------------------------------------------------------------------------------------
# safetensors: a flipped bit is caught or confined to the element it lands in
# ------------------------------------------------------------------------------------------

def safetensors_layout(raw: bytes) -> tuple[int, dict]:
    """(start of the data buffer, name -> (first byte, end byte, numpy dtype, shape)) of a
    well-formed file, read with json and struct only."""
    import json
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    dtypes = {"F64": "<f8", "F32": "<f4", "I64": "<i8", "I32": "<i4", "U8": "u1"}
    start = 8 + n
    return start, {k: (start + v["data_offsets"][0], start + v["data_offsets"][1], np.dtype(dtypes[v["dtype"]]),
                       tuple(v["shape"])) for k, v in header.items()}


def run_arrays(run) -> dict:
    return {k: np.asarray(v) for k, v in run.fields().items() if isinstance(v, np.ndarray)}


def bits(a: np.ndarray) -> np.ndarray:
    """(size, itemsize) bytes of each element (compares NaN payloads and signed zeros too)."""
    return np.ascontiguousarray(a).view(np.uint8).reshape(a.size, -1)


def test_safetensors_bit_flips_are_caught_or_confined(tmp_path):
    """Flip one bit of an exported run, at every byte of the length prefix and the JSON header
    and at 500 random bytes of the tensor data. A file that still loads gives the original arrays
    bit for bit, except, for a flip in a tensor's data, the element holding the flipped byte,
    which holds the flipped value (the kernel, which the format symmetrises, also its mirror
    entry: both become the mean of the flipped entry and the mirror); any other file raises
    FormatError naming it."""
    f = make_fields(bias=True)
    path = br.export(tmp_path / "r.safetensors", **f)
    raw = open(path, "rb").read()
    start, spans = safetensors_layout(raw)
    original = run_arrays(br.load(path))
    assert set(spans) == set(original)
    rng = np.random.default_rng(0)
    positions = list(range(start)) + sorted(rng.choice(np.arange(start, len(raw)), 500, replace=False).tolist())
    outcomes = {"header loaded": 0, "header error": 0, "data loaded": 0, "data error": 0}
    bad = tmp_path / "flip.safetensors"
    for pos in positions:
        b = bytearray(raw)
        b[pos] ^= 1 << int(rng.integers(0, 8))
        bad.write_bytes(bytes(b))
        hit = next((k for k, (lo, hi, _, _) in spans.items() if lo <= pos < hi), None)
        where = "header" if hit is None else "data"
        assert (pos < start) == (hit is None), pos          # the tensors cover the whole buffer
        try:
            got = run_arrays(br.load(bad))
        except br.FormatError as exc:
            assert str(bad) in str(exc), str(exc)
            outcomes[f"{where} error"] += 1
            continue
        outcomes[f"{where} loaded"] += 1
        expected = dict(original)
        if hit is not None:
            lo, hi, dtype, shape = spans[hit]
            flipped = np.frombuffer(bytes(b[lo:hi]), dtype=dtype).reshape(shape).astype(original[hit].dtype)
            if hit == "kernel":
                flipped = 0.5 * (flipped + flipped.transpose(0, 2, 1))
            expected[hit] = flipped
            element = (pos - lo) // dtype.itemsize
            assert (bits(got[hit])[element] != bits(original[hit])[element]).any(), (pos, hit)
        assert set(got) == set(expected), pos
        for name, want in expected.items():
            assert got[name].dtype == want.dtype and got[name].shape == want.shape, (pos, name)
            assert np.array_equal(bits(got[name]), bits(want)), (pos, name)
    # measured: ~6% of the header flips load (metadata keys and values, which have no checksum),
    # ~90% of the data flips (the rest make NaNs, bad labels, unordered steps)
    # every outcome occurs, so each branch of the check above ran
    assert min(outcomes.values()) > 0, outcomes


# ------------------------------------------------------------------------------------------
# safetensors: one file per validation branch of the reader
# ------------------------------------------------------------------------------------------

def raw_safetensors(header, data: bytes = b"", length: int | None = None) -> bytes:
    """Length prefix, header (a JSON-able object, or bytes as they are) and data buffer."""
    import json
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(body) if length is None else length) + body + data


F32_2x2 = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}

#: case -> (file bytes, what the message must say after the file name, the key it names)
SAFETENSORS_DEFECTS = {
    "shorter than the length prefix": (b"\x01\x02\x03", r"not a safetensors file: 3 bytes, shorter than the 8-byte "
                                       r"header length", None),
    "length beyond the file": (raw_safetensors(b"{}", length=1000), r"corrupt or truncated safetensors file: the "
                               r"header claims 1000 bytes but the file has 10 bytes in all", None),
    "header not UTF-8": (raw_safetensors(b'{"\xff": 1}'), r"corrupt safetensors header \(not UTF-8 JSON: "
                         r"'utf-8' codec can't decode byte 0xff", None),
    "header not JSON": (raw_safetensors(b"{nope"), r"corrupt safetensors header \(not UTF-8 JSON: Expecting "
                        r"property name", None),
    "header not an object": (raw_safetensors([1, 2]), r"corrupt safetensors header: expected a JSON object, got "
                             r"list", None),
    "metadata not an object": (raw_safetensors({"__metadata__": ["a"]}), r"__metadata__ must be a JSON object of "
                               r"strings, got list", "__metadata__"),
    "entry not an object": (raw_safetensors({"H": 5}), r"tensor 'H': header entry must have dtype, shape and "
                            r"data_offsets, got 5", "H"),
    "entry without offsets": (raw_safetensors({"H": {"dtype": "F32", "shape": [2, 2]}}, b"\0" * 16),
                              r"tensor 'H': header entry must have dtype, shape and data_offsets, got "
                              r"\{'dtype': 'F32', 'shape': \[2, 2\]\}", "H"),
    "unknown dtype": (raw_safetensors({"H": {**F32_2x2, "dtype": "F8_E4M3"}}, b"\0" * 16),
                      r"tensor 'H': unsupported dtype 'F8_E4M3' \(supported: F64, F32, F16, ", "H"),
    "shape not a list": (raw_safetensors({"H": {**F32_2x2, "shape": "2x2"}}, b"\0" * 16),
                         r"tensor 'H': bad shape '2x2' or data_offsets \[0, 16\]", "H"),
    "negative dimension": (raw_safetensors({"H": {**F32_2x2, "shape": [-2, -2]}}, b"\0" * 16),
                           r"tensor 'H': bad shape \[-2, -2\] or data_offsets \[0, 16\]", "H"),
    "boolean dimension": (raw_safetensors({"H": {**F32_2x2, "shape": [True, 4]}}, b"\0" * 16),
                          r"tensor 'H': bad shape \[True, 4\] or data_offsets \[0, 16\]", "H"),
    "three offsets": (raw_safetensors({"H": {**F32_2x2, "data_offsets": [0, 8, 16]}}, b"\0" * 16),
                      r"tensor 'H': bad shape \[2, 2\] or data_offsets \[0, 8, 16\]", "H"),
    "fractional offset": (raw_safetensors({"H": {**F32_2x2, "data_offsets": [0, 16.0]}}, b"\0" * 16),
                          r"tensor 'H': bad shape \[2, 2\] or data_offsets \[0, 16.0\]", "H"),
    "negative begin": (raw_safetensors({"H": {**F32_2x2, "data_offsets": [-4, 12]}}, b"\0" * 16),
                       r"tensor 'H': data_offsets \[-4, 12\] must have 0 <= begin <= end", "H"),
    "end before begin": (raw_safetensors({"H": {**F32_2x2, "data_offsets": [16, 0]}}, b"\0" * 16),
                         r"tensor 'H': data_offsets \[16, 0\] must have 0 <= begin <= end", "H"),
    "span not the tensor's size": (raw_safetensors({"H": {**F32_2x2, "data_offsets": [0, 8]}}, b"\0" * 8),
                                   r"tensor 'H': data_offsets \[0, 8\] span 8 bytes but dtype F32 and shape "
                                   r"\(2, 2\) need 16", "H"),
    "tensor past the buffer": (raw_safetensors({"H": {**F32_2x2}}, b"\0" * 8),
                               r"truncated file: tensor 'H' ends at byte 16 of the data buffer, which has only 8 "
                               r"bytes", "H"),
    "overlapping tensors": (raw_safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                             "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
                            r"corrupt file: tensor 'b' overlaps the previous tensor", "b"),
    "hole between tensors": (raw_safetensors({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                                              "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}},
                                             b"\0" * 12),
                             r"corrupt file: 4 unused bytes before tensor 'b'", "b"),
    "bytes after the last tensor": (raw_safetensors({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
                                                    b"\0" * 8),
                                    r"corrupt file: 4 bytes after the last tensor are not described by the header",
                                    None),
}


def expect_safetensors_error(path, match, key):
    import re
    with pytest.raises(br.FormatError) as info:
        read_safetensors(path)
    assert re.match(re.escape(repr(str(path))) + ": " + match, str(info.value)), str(info.value)
    assert info.value.source == str(path) and info.value.key == key


@pytest.mark.parametrize("case", list(SAFETENSORS_DEFECTS))
def test_safetensors_reader_names_each_defect(tmp_path, case):
    data, match, key = SAFETENSORS_DEFECTS[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    expect_safetensors_error(path, match, key)


def test_safetensors_reader_caps_the_header_length(tmp_path, monkeypatch):
    """A length prefix beyond MAX_HEADER is refused before anything is read (the cap is
    lowered here so that a small file reaches the branch)."""
    import ufm.bridge.safetensors as st
    monkeypatch.setattr(st, "MAX_HEADER", 8)
    path = tmp_path / "big.safetensors"
    path.write_bytes(raw_safetensors({"H": F32_2x2}, b"\0" * 16))
    expect_safetensors_error(path, r"corrupt or truncated safetensors file: the header claims \d+ bytes", None)


def test_safetensors_reader_notices_a_file_shrinking_while_read(tmp_path, monkeypatch):
    """The header is checked against the size seen at the start; if fewer bytes are there when
    a tensor is read (the file changed meanwhile), the read fails naming the tensor."""
    import ufm.bridge.safetensors as st
    path = tmp_path / "shrinks.safetensors"
    path.write_bytes(raw_safetensors({"H": F32_2x2}, b"\0" * 8))      # 8 of the 16 data bytes
    real = os.path.getsize
    monkeypatch.setattr(st.os.path, "getsize", lambda p: real(p) + 8)  # the size before it shrank
    expect_safetensors_error(path, r"truncated file while reading tensor 'H'", "H")
