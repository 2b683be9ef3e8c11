"""Train small real networks on the synthetic settings and export "ufm-run" files.

Needs torch (an optional extra; the ``ufm`` library itself never imports it). On a CPU-only
machine install a CPU build, e.g. ``pip install torch==2.13.0``.

Each context of a setting (``ufm.settings.factorial`` / ``hierarchy``) is one training input
with its own label (K = N, one-hot). Its input encodes its latent attributes and its identity:

* ``mlp``: x_i = [one-hot of each attribute value, γ·one-hot of the context] — so the input
  Gram is XᵀX = AᵀA + γ²I, the attribute kernel up to scale; a bias-free ReLU MLP with ``depth``
  linear layers (ReLU between them, none after the last) maps x_i to the feature h_i ∈ R^d. It
  is positively homogeneous of degree ``depth`` in its weights (recorded as
  ``homogeneity_degree``: weight decay then acts on the features as λ_E = depth·wd).
* ``transformer``: the context is a sequence of tokens — one per attribute value, then a token
  of its own — through a pre-LayerNorm transformer (``layers`` blocks, 2 heads, final
  LayerNorm); the feature is the last position's output.

A linear head W (K×d, no bias) gives the logits; the loss is the mean cross-entropy over the N
contexts, full batch; the optimiser (SGD or AdamW) decays every parameter with
``weight_decay``. Checkpoints are log-spaced in steps; the traced empirical NTK of the features,
Θ_ij = (1/d) Σ_k ⟨∂h_ik/∂θ, ∂h_jk/∂θ⟩ over the backbone parameters θ (not W), is measured at
initialisation and at ``--kernels`` log-spaced checkpoints. The run is written with
``ufm.bridge.export`` (rows are samples: H is (T, N, d)).

Examples::

    python simulations/train_real.py --arch mlp --setting factorial --optimizer sgd --out runs/mlp_sgd.npz
    python simulations/train_real.py --grid --outdir runs/        # the 8 runs, plus a comparison table
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

import ufm
import ufm.bridge


def setting_problem(name: str):
    """The problem of a setting: 16 contexts with latent attributes."""
    if name == "factorial":
        return ufm.settings.factorial((4, 4))
    if name == "hierarchy":
        return ufm.settings.hierarchy(2, 4)
    raise SystemExit(f"--setting: expected 'factorial' or 'hierarchy', got {name!r}")


def build(arch: str, problem, width: int, depth: int, gamma: float, seed: int):
    """(backbone module, head module, inputs tensor, homogeneity degree or None)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    A = np.asarray(problem.attributes)
    N, F = A.shape
    levels = [int(A[:, f].max()) + 1 for f in range(F)]
    K = problem.K
    if arch == "mlp":
        cols = [np.eye(q)[A[:, f]] for f, q in enumerate(levels)] + [gamma * np.eye(N)]
        X = torch.tensor(np.concatenate(cols, axis=1), dtype=torch.float32)
        layers = []
        dim = X.shape[1]
        for i in range(depth):
            lin = nn.Linear(dim, width, bias=False)
            nn.init.normal_(lin.weight, std=math.sqrt(2.0 / dim) if i < depth - 1 else math.sqrt(1.0 / dim))
            layers.append(lin)
            if i < depth - 1:
                layers.append(nn.ReLU())
            dim = width
        backbone = nn.Sequential(*layers)
        degree = depth
    elif arch == "transformer":
        offsets = np.cumsum([0] + levels)
        tokens = np.concatenate([A + offsets[:-1][None, :], offsets[-1] + np.arange(N)[:, None]], axis=1)
        X = torch.tensor(tokens, dtype=torch.long)
        backbone = TinyTransformer(vocab=int(offsets[-1] + N), length=F + 1, width=width, layers=depth)
        degree = None
    else:
        raise SystemExit(f"--arch: expected 'mlp' or 'transformer', got {arch!r}")
    head = nn.Linear(width, K, bias=False)
    nn.init.normal_(head.weight, std=1.0 / math.sqrt(width))
    return backbone, head, X, degree


def TinyTransformer(vocab: int, length: int, width: int, layers: int):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(width)
            self.attn = nn.MultiheadAttention(width, 2, batch_first=True)
            self.ln2 = nn.LayerNorm(width)
            self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

        def forward(self, x):
            a = self.ln1(x)
            x = x + self.attn(a, a, a, need_weights=False)[0]
            return x + self.mlp(self.ln2(x))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, width)
            self.pos = nn.Parameter(0.1 * torch.randn(length, width))
            self.blocks = nn.ModuleList([Block() for _ in range(layers)])
            self.ln = nn.LayerNorm(width)

        def forward(self, tokens):
            x = self.emb(tokens) + self.pos
            for blk in self.blocks:
                x = blk(x)
            return self.ln(x)[:, -1, :]

    return Model()


def feature_kernel(backbone, X):
    """Traced empirical NTK of the features, Θ_ij = (1/d) Σ_k ⟨∂h_ik/∂θ, ∂h_jk/∂θ⟩, (N, N)."""
    import torch
    from torch.func import functional_call, jacrev

    params = {k: v.detach() for k, v in backbone.named_parameters()}

    def f(p):
        return functional_call(backbone, p, (X,))

    jac = jacrev(f)(params)                                   # name -> (N, d, *shape)
    N, d = next(iter(jac.values())).shape[:2]
    theta = torch.zeros(N, N, dtype=torch.float64)
    for J in jac.values():
        J = J.reshape(N, d, -1).to(torch.float64)
        theta += torch.einsum("ikp,jkp->ij", J, J)
    return (theta / d).numpy()


def save_steps(steps: int, count: int) -> np.ndarray:
    return np.unique(np.concatenate([[0], np.geomspace(1, steps, count).round().astype(np.int64)]))


def train(arch="mlp", setting="factorial", optimizer="sgd", lr=None, weight_decay=None, steps=None, width=32,
          depth=None, gamma=0.5, checkpoints=60, kernels=6, seed=0, out=None, dtype="float32", quiet=False):
    """Train one network and export the run; returns the path written."""
    import torch

    torch.set_num_threads(1)
    problem = setting_problem(setting)
    depth = depth or (4 if arch == "mlp" else 2)
    defaults = {("mlp", "sgd"): (0.05, 5e-3, 4000), ("mlp", "adamw"): (3e-3, 5e-2, 3000),
                ("transformer", "sgd"): (0.05, 5e-3, 4000), ("transformer", "adamw"): (3e-3, 5e-2, 3000)}
    d_lr, d_wd, d_steps = defaults[(arch, optimizer)]
    lr = d_lr if lr is None else lr
    weight_decay = d_wd if weight_decay is None else weight_decay
    steps = d_steps if steps is None else steps
    backbone, head, X, degree = build(arch, problem, width, depth, gamma, seed)
    y = torch.tensor(problem.labels, dtype=torch.long)
    params = list(backbone.parameters()) + list(head.parameters())
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        raise SystemExit(f"--optimizer: expected 'sgd' or 'adamw', got {optimizer!r}")
    keep = save_steps(steps, checkpoints)
    kern_at = set(keep[np.unique(np.linspace(0, len(keep) - 1, kernels + 1).round().astype(int))].tolist())
    kern_at.add(0)
    Hs, Ws, losses, ks, kss = [], [], [], [], []
    keep_set = set(keep.tolist())
    started = time.perf_counter()
    for step in range(steps + 1):
        h = backbone(X)
        loss = torch.nn.functional.cross_entropy(head(h), y)
        if step in keep_set:
            Hs.append(h.detach().numpy().copy())
            Ws.append(head.weight.detach().numpy().copy())
            losses.append(loss.item())
            if step in kern_at:
                ks.append(feature_kernel(backbone, X))
                kss.append(step)
        if step == steps:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    meta = {"task": f"{setting} ({problem.name}), one label per context", "setting": setting,
            "model": (f"bias-free ReLU MLP, {depth} layers, width {width}, context one-hot scale {gamma}"
                      if arch == "mlp" else f"pre-LN transformer, {depth} blocks, width {width}, 2 heads"),
            "arch": arch, "optimizer": optimizer, "seed": seed, "steps": int(steps),
            "loss": "mean cross-entropy, full batch", "torch": torch.__version__,
            "command": "python simulations/train_real.py " + " ".join(sys.argv[1:]),
            "wall_time_s": round(time.perf_counter() - started, 2)}
    if degree is not None:
        meta["homogeneity_degree"] = degree
    if optimizer == "adamw":
        meta["betas"] = [0.9, 0.999]
    out = out or f"{arch}_{setting}_{optimizer}.npz"
    ufm.bridge.export(out, steps=keep, H=np.stack(Hs), W=np.stack(Ws), labels=problem.labels,
                      attributes=problem.attributes, loss=np.array(losses), kernel=np.stack(ks),
                      kernel_steps=np.array(kss), lr=lr, weight_decay=weight_decay, meta=meta, dtype=dtype)
    if not quiet:
        print(f"wrote {out} ({os.path.getsize(out) / 1024:.0f} KiB) in {meta['wall_time_s']} s; final loss {losses[-1]:.4g}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="mlp", choices=("mlp", "transformer"))
    ap.add_argument("--setting", default="factorial", choices=("factorial", "hierarchy"))
    ap.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"))
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--weight-decay", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--depth", type=int, default=None, help="MLP layers (default 4) / transformer blocks (default 2)")
    ap.add_argument("--gamma", type=float, default=0.5, help="MLP: scale of the context one-hot in the input")
    ap.add_argument("--checkpoints", type=int, default=60)
    ap.add_argument("--kernels", type=int, default=6, help="kernel measurements after initialisation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64", "float16"))
    ap.add_argument("--out", default=None, help="output file (.npz / .safetensors / .h5 / directory)")
    ap.add_argument("--grid", action="store_true", help="all arch × setting × optimizer runs, then compare")
    ap.add_argument("--outdir", default="runs")
    args = ap.parse_args(argv)
    common = dict(lr=args.lr, weight_decay=args.weight_decay, steps=args.steps, width=args.width, depth=args.depth,
                  gamma=args.gamma, checkpoints=args.checkpoints, kernels=args.kernels, seed=args.seed,
                  dtype=args.dtype)
    if not args.grid:
        train(args.arch, args.setting, args.optimizer, out=args.out, **common)
        return 0
    os.makedirs(args.outdir, exist_ok=True)
    rows = []
    for arch in ("mlp", "transformer"):
        for setting in ("factorial", "hierarchy"):
            for opt in ("sgd", "adamw"):
                path = train(arch, setting, opt, out=os.path.join(args.outdir, f"{arch}_{setting}_{opt}.npz"), **common)
                run = ufm.bridge.load(path)
                m = run.metrics()
                cmp = ufm.bridge.compare(run)
                rows.append({"run": os.path.basename(path), "gap_peak": float(np.max(m["semantic_gap"])),
                             "gap_last": float(m["semantic_gap"][-1]), "etf_last": float(m["etf_distance"][-1]),
                             "erank_last": float(m["effective_rank"][-1]), "best": cmp.best(),
                             "table": cmp.table()})
                print(cmp.report())
    with open(os.path.join(args.outdir, "summary.json"), "w") as fh:
        json.dump(rows, fh, indent=1, default=float)
    for r in rows:
        print(f"{r['run']:32s} gap peak {r['gap_peak']:.3f} last {r['gap_last']:.3f}  ETF {r['etf_last']:.3f}  "
              f"erank {r['erank_last']:.2f}  best: {r['best']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
