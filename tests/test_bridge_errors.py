"""ufm.bridge: corrupted and invalid inputs each give the documented FormatError (naming the key,
the checkpoint, the file), never a bare numpy / struct / zipfile traceback."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import ufm.bridge as br
from test_bridge_io import make_fields


def expect(exc_match, fn, *, key=None, checkpoint=None):
    with pytest.raises(br.FormatError, match=exc_match) as info:
        fn()
    if key is not None:
        assert info.value.key == key, str(info.value)
    if checkpoint is not None:
        assert info.value.checkpoint == checkpoint, str(info.value)
    return info.value


# ------------------------------------------------------------------------------------------
# fuzz: truncated and bit-flipped files
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["r.npz", "r.safetensors"])
def test_truncated_files_give_format_errors(tmp_path, name):
    path = br.export(tmp_path / name, **make_fields())
    raw = open(path, "rb").read()
    cuts = sorted(set(np.linspace(0, len(raw) - 1, 40).astype(int).tolist() + [0, 1, 7, 8, 9, len(raw) - 1]))
    for cut in cuts:
        bad = tmp_path / f"cut{cut}{os.path.splitext(name)[1]}"
        bad.write_bytes(raw[:cut])
        with pytest.raises(br.FormatError) as info:
            br.load(bad)
        assert str(bad) in str(info.value) or repr(str(bad)) in str(info.value)


def test_random_byte_flips_never_crash_differently(tmp_path):
    """Flip bytes anywhere in a safetensors file: it loads (a flip in the data) or raises
    FormatError (header, offsets, a NaN produced in the data); nothing else."""
    f = make_fields()
    path = br.export(tmp_path / "r.safetensors", **f)
    raw = bytearray(open(path, "rb").read())
    rng = np.random.default_rng(0)
    outcomes = {"loaded": 0, "error": 0}
    for trial in range(120):
        b = bytearray(raw)
        # half the flips land in the 8-byte length or the JSON header, half anywhere
        n_head = 8 + int.from_bytes(raw[:8], "little")
        pos = rng.integers(0, n_head if trial % 2 else len(b), size=rng.integers(1, 4))
        for p in pos:
            b[p] = int(rng.integers(0, 256))
        bad = tmp_path / f"flip{trial}.safetensors"
        bad.write_bytes(bytes(b))
        try:
            br.load(bad)
            outcomes["loaded"] += 1
        except br.FormatError:
            outcomes["error"] += 1
    assert outcomes["error"] > 20 and outcomes["loaded"] > 5, outcomes


def test_corrupt_safetensors_headers(tmp_path):
    path = tmp_path / "h.safetensors"

    def write(header: bytes, data: bytes = b""):
        path.write_bytes(len(header).to_bytes(8, "little") + header + data)
        return lambda: br.load(path)

    expect("not UTF-8 JSON", write(b"{not json"))
    expect("header claims", lambda: (path.write_bytes((10 ** 6).to_bytes(8, "little") + b"{}"), br.load(path))[1])
    expect("unsupported dtype", write(json.dumps({"H": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}})
                                      .encode(), b"\0"), key="H")
    expect("need 16", write(json.dumps({"H": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 8]}}).encode(),
                            b"\0" * 8), key="H")
    expect("truncated file", write(json.dumps({"H": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})
                                   .encode(), b"\0" * 8), key="H")
    expect("overlaps", write(json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                         "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}).encode(),
                             b"\0" * 8))
    expect("not described by the header", write(json.dumps({"a": {"dtype": "F32", "shape": [1],
                                                                  "data_offsets": [0, 4]}}).encode(), b"\0" * 8))


# ------------------------------------------------------------------------------------------
# contents that break the format
# ------------------------------------------------------------------------------------------

def save_npz(tmp_path, **arrays):
    path = tmp_path / "x.npz"
    np.savez(path, **arrays)
    return lambda: br.load(path)


def base():
    f = make_fields()
    return {k: v for k, v in f.items() if k not in ("meta", "lr", "weight_decay")}


@pytest.mark.parametrize("missing", ["steps", "H", "W", "labels"])
def test_missing_keys(tmp_path, missing):
    a = base()
    del a[missing]
    expect(f"{missing}: missing", save_npz(tmp_path, **a), key=missing)


@pytest.mark.parametrize("key,value,match", [
    ("H", np.full((6, 6, 8), "x"), "H: expected an array of real numbers, found dtype <U1"),
    ("W", np.ones((6, 6, 8), dtype=bool), "W: expected an array of real numbers, found dtype bool"),
    ("H", np.ones((6, 6, 8), dtype=complex), "found dtype complex128"),
    ("steps", np.array([0.0, 1.5, 3, 10, 30, 100]), "steps: expected integer values"),
    ("labels", np.array([0, 1, 2, 3, 4, 5.5]), "labels: expected integer values"),
])
def test_wrong_dtypes(tmp_path, key, value, match):
    a = base()
    a[key] = value
    expect(match, save_npz(tmp_path, **a), key=key)


@pytest.mark.parametrize("key,shape,match", [
    ("W", (6, 6, 7), r"W: expected shape \(6, \*, 8\)"),
    ("H", (5, 6, 8), r"H: expected shape \(6, \*, \*\) with T = 6"),
    ("H", (6, 8), r"H: expected shape \(T, N, d\)"),
    ("labels", (5,), r"labels: expected shape \(6,\)"),
    ("attributes", (5, 2), r"attributes: expected shape \(6, \*\)"),
    ("loss", (7,), r"loss: expected shape \(6,\)"),
    ("kernel", (3, 5, 5), r"kernel: expected shape \(N, N\) or \(P, N, N\) with N = 6"),
    ("kernel_steps", (2,), r"kernel_steps: expected shape \(3,\)"),
])
def test_inconsistent_shapes(tmp_path, key, shape, match):
    a = base()
    a[key] = np.zeros(shape, dtype=a[key].dtype)
    expect(match, save_npz(tmp_path, **a), key=key)


@pytest.mark.parametrize("key", ["H", "W", "b"])
def test_nan_at_one_checkpoint_names_checkpoint_step_and_array(tmp_path, key):
    f = make_fields(bias=True)
    a = {k: v for k, v in f.items() if k not in ("meta", "lr", "weight_decay")}
    a[key] = a[key].copy()
    a[key][4].flat[3] = np.nan
    err = expect(rf"{key}: non-finite value nan at checkpoint 4 \(step 30\)", save_npz(tmp_path, **a),
                 key=key, checkpoint=4)
    assert "x.npz" in str(err)


def test_non_increasing_steps_labels_soft_labels_kernel(tmp_path):
    a = base()
    a["steps"] = np.array([0, 1, 3, 3, 30, 100])
    expect(r"steps\[3\] = 3 <= steps\[2\] = 3", save_npz(tmp_path, **a), key="steps", checkpoint=3)
    a = base()
    a["labels"] = np.array([0, 1, 2, 3, 4, 6])
    expect(r"labels\[5\] = 6", save_npz(tmp_path, **a), key="labels")
    a = base()
    del a["labels"]
    Y = np.full((6, 6), 1 / 6)
    Y[2, 0] += 0.1
    a["Y"] = Y
    expect("row 2 sums to 1.1", save_npz(tmp_path, **a), key="Y")
    a["Y"] = np.full((6, 6), 1 / 6) - np.eye(6) * 0.5 + 0.5 / 6 * 0
    expect("soft labels must be >= 0", save_npz(tmp_path, **a), key="Y")
    a = base()
    a["kernel"] = a["kernel"].copy()
    a["kernel"][1, 0, 1] += 5.0
    expect(r"kernel 1 \(step 10\) is not symmetric", save_npz(tmp_path, **a), key="kernel", checkpoint=1)
    a = base()
    a["kernel"] = np.stack([np.eye(6), -np.eye(6), np.eye(6)])
    expect("not positive semi-definite", save_npz(tmp_path, **a), key="kernel", checkpoint=1)
    a = base()
    a["unknown"] = np.zeros(3)
    expect("unknown key", save_npz(tmp_path, **a), key="unknown")


def test_bad_json_metadata(tmp_path):
    a = base()
    expect("bad JSON in the metadata at line 1", save_npz(tmp_path, **a, meta=np.array('{"lr": 0.1,')), key="meta")
    expect("must be a JSON object", save_npz(tmp_path, **a, meta=np.array('[1, 2]')), key="meta")
    expect("format 'other'", save_npz(tmp_path, **a, meta=np.array('{"format": "other"}')), key="format")
    expect("upgrade", save_npz(tmp_path, **a, meta=np.array('{"version": 2}')), key="version")
    d = tmp_path / "ck"
    br.export(d, **make_fields())
    (d / "meta.json").write_text('{"lr": 0.1, oops}')
    expect("meta.json.*bad JSON.*line 1, column 13", lambda: br.load(d), key="meta")
    (d / "meta.json").write_text('{"lr": -1}')
    expect("lr: expected a finite number > 0", lambda: br.load(d), key="lr")


def test_pickled_npz_is_refused(tmp_path):
    a = base()
    np.savez(tmp_path / "p.npz", **a, extra=np.array([{"a": 1}], dtype=object))
    expect("pickled Python objects", lambda: br.load(tmp_path / "p.npz"))


def test_checkpoint_directory_problems(tmp_path):
    d = tmp_path / "ck"
    br.export(d, **make_fields())
    np.savez(d / "ckpt_30.npz", H=np.zeros((6, 8)), W=np.zeros((6, 7)), step=np.array(30), loss=1.0)
    expect(r"W: shape \(6, 7\) at checkpoint 4 \(step 30\) differs", lambda: br.load(d), key="W", checkpoint=4)
    np.savez(d / "ckpt_30.npz", W=np.zeros((6, 8)), step=np.array(30), loss=1.0)
    expect(r"H: missing from checkpoint 4 \(step 30\)", lambda: br.load(d), key="H", checkpoint=4)
    np.savez(d / "ckpt_30.npz", H=np.zeros((6, 8)), W=np.zeros((6, 8)), step=np.array(31), loss=1.0)
    expect("holds step \\[31\\] but its name says 30", lambda: br.load(d), key="step")
    np.savez(d / "ckpt_30.npz", H=np.zeros((6, 8)), W=np.zeros((6, 8)), step=np.array(30), loss=1.0)
    br.load(d)                                             # repaired
    (d / "ckpt_30.safetensors").write_bytes(b"")
    expect("two files for step 30", lambda: br.load(d), key="steps")
    os.remove(d / "ckpt_30.safetensors")
    (d / "ckpt_100.npz").write_bytes(b"PK\x03\x04garbage")
    expect("ckpt_100.npz", lambda: br.load(d))


def test_torch_files_are_refused_with_the_export_recipe(tmp_path):
    z = tmp_path / "model.pt"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    err = expect("torch checkpoint", lambda: br.load(z))
    msg = str(err)
    assert "ufm.bridge.export(" in msg and ".float().numpy()" in msg and "torch.load(" in msg
    legacy = tmp_path / "old.pth"
    legacy.write_bytes(b"\x80\x02}q\x00.")
    expect("torch checkpoint", lambda: br.load(legacy))
    zipped_bin = tmp_path / "weights.bin"
    zipped_bin.write_bytes(open(z, "rb").read())
    expect("torch checkpoint", lambda: br.load(zipped_bin))


def test_unrecognised_paths(tmp_path):
    expect("no such file", lambda: br.load(tmp_path / "nope.npz"))
    (tmp_path / "empty").mkdir()
    expect("neither a checkpoint directory", lambda: br.load(tmp_path / "empty"))
    (tmp_path / "x.txt").write_text("hello")
    expect("unrecognised file", lambda: br.load(tmp_path / "x.txt"))


def test_export_validates_before_writing(tmp_path):
    f = make_fields()
    f["H"] = f["H"].copy()
    f["H"][2, 0, 0] = np.inf
    expect("H: non-finite value inf at checkpoint 2", lambda: br.export(tmp_path / "a.npz", **f), checkpoint=2)
    assert not (tmp_path / "a.npz").exists()
    with pytest.raises(ValueError, match="bfloat16"):
        br.export(tmp_path / "a.npz", dtype="bfloat16", **make_fields())
    with pytest.raises(ValueError, match="format"):
        br.export(tmp_path / "a.zip", **make_fields())
