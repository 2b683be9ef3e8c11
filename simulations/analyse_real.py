"""An independent analysis of exported real runs: numpy only (no ``ufm.metrics``, no torch).

Written to check the bridge's numbers and verdicts against a second implementation: every
quantity is computed here from the raw feature rows H (T, N, d), classifier rows W (T, K, d),
attributes, labels and loss of a "ufm-run" file, read with ``numpy.load`` alone.

Per checkpoint:

* ``gap_centred``: subtract the mean feature over the N contexts, take cosines of the centred
  rows, then mean cosine of the pairs sharing at least one attribute value minus the mean
  cosine of the pairs sharing none (pairs with equal labels left out). For the hierarchy
  (``ufm.settings.hierarchy``) the attributes are the ancestors at levels 1 … depth−1, and a
  deeper shared ancestor implies a shared level-1 ancestor, so this is "same top-level
  subtree" minus "different top-level subtrees".
* ``gap_uncentred``: the same with the raw rows (the convention of ``ufm.metrics``).
* ``etf_distance``: ‖Ĝ − Ê‖_F of the doubly-centred, Frobenius-normalised feature Gram and the
  same for the simplex-ETF Gram E_ij = [y_i = y_j] − 1/K; in [0, 2]; NaN when the centred
  Gram vanishes (all rows equal).
* ``participation_ratio``: (tr C)² / tr(C²) of the centred Gram C = H_c H_cᵀ — the number of
  directions the centred features occupy (N − 1 = 15 at the ETF of 16 contexts, 1 for a rank-1
  code).
* ``feature_norm`` / ``classifier_norm``: root-mean-square row norms of H and W.
* ``loss`` as logged; ``nonfinite`` (any non-finite entry in H or W) and ``identical``
  (every row of H within 1e-3·RMS norm of the mean row, i.e. the centred features vanish).

Run as a script on one or more files (or a directory) to print each run's summary, or with
``--markdown`` the configuration and numbers tables of tests/data/real/README.md::

    python simulations/analyse_real.py tests/data/real/
    python simulations/analyse_real.py --markdown tests/data/real/
"""

from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np

#: relative spread below which all feature rows count as identical
IDENTICAL_RTOL = 1e-3


def read_run(path: str) -> dict:
    """The arrays and metadata of an npz "ufm-run" file, read with numpy alone (float64)."""
    with np.load(path, allow_pickle=False) as data:
        out = {k: np.asarray(data[k]) for k in data.files if k != "meta"}
        out["meta"] = json.loads(str(data["meta"])) if "meta" in data.files else {}
    for key in ("H", "W", "loss"):
        if key in out:
            out[key] = out[key].astype(np.float64)
    return out


def _pair_masks(attributes: np.ndarray, labels: np.ndarray | None):
    """(sharing, sharing_none) boolean masks over the pairs i < j with different labels."""
    A = np.asarray(attributes)
    if A.ndim == 1:
        A = A[:, None]
    N = A.shape[0]
    upper = np.triu(np.ones((N, N), dtype=bool), k=1)
    if labels is not None:
        upper &= np.asarray(labels)[:, None] != np.asarray(labels)[None, :]
    shares_any = np.zeros((N, N), dtype=bool)
    for f in range(A.shape[1]):
        shares_any |= A[:, f][:, None] == A[:, f][None, :]
    return upper & shares_any, upper & ~shares_any


def _cosines(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    U = X / safe[:, None]
    return U @ U.T


def gap(H: np.ndarray, attributes, labels=None, centred: bool = True) -> float:
    """Semantic gap of one checkpoint's rows H (N, d); see the module docstring."""
    X = H - H.mean(axis=0, keepdims=True) if centred else H
    share, none = _pair_masks(attributes, labels)
    cos = _cosines(X)
    return float(cos[share].mean() - cos[none].mean())


def etf_distance(H: np.ndarray, labels=None) -> float:
    """Distance of the centred, normalised Gram of H (N, d) from the simplex-ETF Gram."""
    N = H.shape[0]
    lab = np.arange(N) if labels is None else np.asarray(labels)
    K = np.unique(lab).size
    E = (lab[:, None] == lab[None, :]).astype(np.float64) - 1.0 / K
    Hc = H - H.mean(axis=0, keepdims=True)
    G = Hc @ Hc.T                                        # = C (H Hᵀ) C
    Cen = np.eye(N) - 1.0 / N
    E = Cen @ E @ Cen
    nG = np.linalg.norm(G)
    if not nG > 10 * N * np.finfo(float).eps * np.linalg.norm(H @ H.T):
        return float("nan")
    return float(np.linalg.norm(G / nG - E / np.linalg.norm(E)))


def participation_ratio(H: np.ndarray) -> float:
    """(tr C)² / tr(C²) of the centred Gram C of H (N, d); NaN when C vanishes."""
    Hc = H - H.mean(axis=0, keepdims=True)
    C = Hc @ Hc.T
    tr2 = float(np.sum(C * C))
    return float(np.trace(C) ** 2 / tr2) if tr2 > 0 else float("nan")


def analyse(run: dict) -> dict:
    """Per-checkpoint arrays (T,) of every quantity in the module docstring, plus ``steps``."""
    H, W = run["H"], run["W"]
    attributes, labels = run["attributes"], run.get("labels")
    T = H.shape[0]
    out = {k: np.full(T, np.nan) for k in ("gap_centred", "gap_uncentred", "etf_distance", "participation_ratio",
                                           "feature_norm", "classifier_norm")}
    out["nonfinite"] = np.zeros(T, dtype=bool)
    out["identical"] = np.zeros(T, dtype=bool)
    for t in range(T):
        if not (np.all(np.isfinite(H[t])) and np.all(np.isfinite(W[t]))):
            out["nonfinite"][t] = True
            continue
        rms = np.sqrt(np.mean(np.sum(H[t] ** 2, axis=1)))
        spread = np.max(np.linalg.norm(H[t] - H[t].mean(axis=0), axis=1))
        out["identical"][t] = bool(spread <= IDENTICAL_RTOL * rms)
        out["feature_norm"][t] = rms
        out["classifier_norm"][t] = np.sqrt(np.mean(np.sum(W[t] ** 2, axis=1)))
        out["gap_uncentred"][t] = gap(H[t], attributes, labels, centred=False)
        if out["identical"][t]:
            continue
        out["gap_centred"][t] = gap(H[t], attributes, labels, centred=True)
        out["etf_distance"][t] = etf_distance(H[t], labels)
        out["participation_ratio"][t] = participation_ratio(H[t])
    out["steps"] = np.asarray(run["steps"])
    out["loss"] = np.asarray(run["loss"], dtype=np.float64) if "loss" in run else np.full(T, np.nan)
    return out


def summary(series: dict) -> dict:
    """The numbers of one README table row from :func:`analyse`'s output (first / max / last)."""
    g = series["gap_centred"]
    j = int(np.nanargmax(g))
    return {
        "T": int(series["steps"].size), "last_step": int(series["steps"][-1]),
        "gap0": float(g[0]), "gap_max": float(g[j]), "gap_max_step": int(series["steps"][j]), "gap_end": float(g[-1]),
        "ugap0": float(series["gap_uncentred"][0]), "ugap_max": float(np.nanmax(series["gap_uncentred"])),
        "ugap_end": float(series["gap_uncentred"][-1]),
        "etf0": float(series["etf_distance"][0]), "etf_min": float(np.nanmin(series["etf_distance"])),
        "etf_end": float(series["etf_distance"][-1]),
        "pr0": float(series["participation_ratio"][0]), "pr_min": float(np.nanmin(series["participation_ratio"])),
        "pr_end": float(series["participation_ratio"][-1]),
        "loss0": float(series["loss"][0]), "loss_min": float(np.nanmin(series["loss"])),
        "loss_end": float(series["loss"][-1]),
        "hnorm0": float(series["feature_norm"][0]), "hnorm_max": float(np.nanmax(series["feature_norm"])),
        "hnorm_end": float(series["feature_norm"][-1]),
        "wnorm0": float(series["classifier_norm"][0]), "wnorm_end": float(series["classifier_norm"][-1]),
        "identical_from": (int(series["steps"][np.argmax(series["identical"])]) if series["identical"].any()
                           else None),
        "nonfinite": bool(series["nonfinite"].any()),
    }


def flags(summary_row: dict, meta: dict) -> str:
    """The flags cell of a run: ``identical@STEP`` (all rows equal from that checkpoint on),
    ``nonfinite``, ``stopped@STEP`` (the exporter stopped the run there), or ``—``."""
    out = []
    if summary_row["identical_from"] is not None:
        out.append(f"identical@{summary_row['identical_from']}")
    if summary_row["nonfinite"]:
        out.append("nonfinite")
    if "stopped" in meta:
        out.append(f"stopped@{meta['stopped']['step']}")
    return " ".join(out) or "—"


def _fmt(x, kind):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "nan"
    if kind == "f3":
        return f"{x:.3f}"
    if kind == "f2":
        return f"{x:.2f}"
    return f"{x:.3g}"                                          # 3 significant digits


#: the columns of the numbers table: (header, summary key, format)
NUMBER_COLUMNS = (
    ("T", "T", "int"), ("last step", "last_step", "int"),
    ("gap₀", "gap0", "f3"), ("gap max", "gap_max", "f3"), ("at step", "gap_max_step", "int"), ("gap end", "gap_end", "f3"),
    ("ugap₀", "ugap0", "f3"), ("ugap max", "ugap_max", "f3"), ("ugap end", "ugap_end", "f3"),
    ("ETF₀", "etf0", "f3"), ("ETF min", "etf_min", "f3"), ("ETF end", "etf_end", "f3"),
    ("PR₀", "pr0", "f2"), ("PR min", "pr_min", "f2"), ("PR end", "pr_end", "f2"),
    ("loss₀", "loss0", "g3"), ("loss end", "loss_end", "g3"),
    ("‖h‖₀", "hnorm0", "g3"), ("‖h‖ max", "hnorm_max", "g3"), ("‖h‖ end", "hnorm_end", "g3"),
    ("‖w‖ end", "wnorm_end", "g3"),
)

#: the columns of the configuration table: (header, metadata key)
CONFIG_COLUMNS = (("arch", "arch"), ("optimizer", "optimizer"), ("setting", "setting"), ("shape", "setting_shape"),
                  ("objective", "objective"), ("width", "width"), ("lr", "lr"), ("wd", "weight_decay"),
                  ("steps", "steps"), ("seed", "seed"))


def _config_cell(meta, key):
    v = meta.get(key)
    if key == "setting_shape":
        return "×".join(str(x) for x in v) if meta.get("setting") == "factorial" else f"{v[0]}^{v[1]}"
    return f"{v:g}" if isinstance(v, float) else str(v)


def markdown_tables(paths) -> str:
    """The configuration table and the numbers table of tests/data/real/README.md."""
    paths = list(paths)
    cfg = ["| run | " + " | ".join(h for h, _ in CONFIG_COLUMNS) + " | CPU s | KiB |",
           "|---" * (len(CONFIG_COLUMNS) + 3) + "|"]
    num = ["| run | " + " | ".join(h for h, _, _ in NUMBER_COLUMNS) + " | flags |",
           "|---" * (len(NUMBER_COLUMNS) + 2) + "|"]
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        run = read_run(path)
        m = run["meta"]
        cfg.append(f"| {name} | " + " | ".join(_config_cell(m, k) for _, k in CONFIG_COLUMNS)
                   + f" | {m.get('cpu_time_s', float('nan')):.1f} | {os.path.getsize(path) / 1024:.0f} |")
        s = summary(analyse(run))
        num.append(f"| {name} | " + " | ".join(str(s[k]) if kind == "int" else _fmt(s[k], kind)
                                            for _, k, kind in NUMBER_COLUMNS) + f" | {flags(s, m)} |")
    return "\n".join(cfg) + "\n\n" + "\n".join(num) + "\n"


def _paths(args):
    for a in args:
        if os.path.isdir(a):
            yield from sorted(glob.glob(os.path.join(a, "*.npz")))
        else:
            yield a


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    markdown = "--markdown" in args
    args = [a for a in args if a != "--markdown"]
    if not args:
        print(__doc__.strip().splitlines()[0])
        print("usage: python simulations/analyse_real.py [--markdown] RUN.npz|DIR ...")
        return 2
    if markdown:
        print(markdown_tables(_paths(args)), end="")
        return 0
    for path in _paths(args):
        run = read_run(path)
        s = summary(analyse(run))
        m = run["meta"]
        print(f"{os.path.basename(path)}: {m.get('arch')} {m.get('optimizer')} {m.get('setting')} "
              f"lr {m.get('lr')} wd {m.get('weight_decay')} steps {m.get('steps')} seed {m.get('seed')}"
              + (f" stopped {m['stopped']}" if "stopped" in m else ""))
        print("  " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
