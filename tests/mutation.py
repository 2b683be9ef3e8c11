"""Mutation harness: apply plausible bugs to a copy of the package and see which tests notice.

Run by hand from the repository root (pytest never collects this file: its name does not
match ``test_*.py``, and it does nothing on import)::

    python tests/mutation.py                    # every mutation
    python tests/mutation.py --list             # names and descriptions
    python tests/mutation.py --only dp-error-without-h bias-loop-range-k
    python tests/mutation.py --jobs 2           # two mutations at a time (two copies)

How it works. The working tree (without .git and caches) is copied to a temporary directory
once per job. Each mutation is a list of exact find/replace edits; every ``find`` must occur
exactly once in its file, otherwise the harness stops with the file and pattern (the list has
gone out of date with the code). The edits are applied, the mutation's own test files run
with ``pytest -x -q -p no:cacheprovider`` (first failure stops the run), and the files are
restored byte for byte with their original times. A mutation that edits a jitted file runs
with an empty ``NUMBA_CACHE_DIR``: numba keys caches by the defining file only and callers
inline callees, so no cached code may be reused. The other mutations share one cache compiled
from the unmutated sources by the baseline run — valid for them, as no jitted file differs.
The baseline (the union of all test files, unmutated) must pass first.

Output: one line per mutation — ``killed`` with the first failing test, or ``SURVIVED`` —
with its wall time. Exit status 1 if any mutation survived (or the baseline failed).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
JITTED = ("ufm/kernels/",)


@dataclass(frozen=True)
class Mutation:
    """One plausible bug.

    Attributes:
        name: identifier for ``--only``.
        description: what the bug is.
        edits: ``(path, find, replace)`` triples, paths relative to the repository root; each
            ``find`` must occur exactly once in its file.
        tests: test files to run, fastest-to-kill first.
        note: anything a reader of the report should know.
    """

    name: str
    description: str
    edits: tuple
    tests: tuple
    note: str = ""

    @property
    def touches_jitted(self) -> bool:
        return any(path.startswith(JITTED) for path, _, _ in self.edits)


def M(name, description, edits, tests, note=""):
    return Mutation(name, description, tuple(edits), tuple(f"tests/{t}" for t in tests), note)


INTEGRATE = "ufm/kernels/integrate.py"
FIELDS = "ufm/kernels/fields.py"
OPTIMIZERS = "ufm/kernels/optimizers.py"
ACCURACY = ("test_accuracy.py", "test_solvers.py", "test_solve.py")
KERNELS = ("test_kernels_reference.py", "test_models.py", "test_train.py", "test_solve.py")

MUTATIONS = [
    # -- from issue 14 -------------------------------------------------------------------------
    M("dp-error-without-h", "Dormand–Prince error estimate without its factor h (errv = acc)",
      [(INTEGRATE, "errv[m] = h_try * acc[m]", "errv[m] = acc[m]")], ACCURACY),
    M("bias-rate-eta-w", "bias rate η_W instead of η_b, in the kernel AND in the numpy reference",
      [(FIELDS, "db[k] = -coef[C_LR_B] * (s + coef[C_LAM_B] * b[k])",
        "db[k] = -coef[C_LR_W] * (s + coef[C_LAM_B] * b[k])"),
       ("ufm/reference.py", "db = None if state.b is None else -lr_b * (G.sum(axis=1) + lam_b * state.b)",
        "db = None if state.b is None else -lr_w * (G.sum(axis=1) + lam_b * state.b)")], KERNELS),
    M("bias-loop-range-k", "the bias field sums G over range(K) instead of the N contexts",
      [(FIELDS, "        for i in range(N):\n            s += G[k, i]",
        "        for i in range(K):\n            s += G[k, i]")], KERNELS),
    M("semantic-gap-same-label-pairs", "the semantic gap's pair masks no longer exclude same-label pairs "
      "(K < N: several samples per context)",
      [("ufm/metrics.py", "        valid &= lab[:, None] != lab[None, :]\n    per = tuple(",
        "        pass\n    per = tuple(")],
      ("test_metrics.py", "test_metrics_layer.py", "test_sweep.py", "test_bridge_io.py")),
    # -- the step-size controller and the integrator ---------------------------------------------
    M("pi-controller-exponent", "step controller exponent 1/(q+2) instead of 1/(q+1)",
      [(INTEGRATE, "expo1 = 1.0 / order - 0.75 * beta", "expo1 = 1.0 / (order + 1.0) - 0.75 * beta")], ACCURACY),
    M("controller-safety-inverted", "safety factor multiplies instead of divides (steps 1/0.81 too long)",
      [(INTEGRATE, "fac = max(1.0 / fac_max, min(1.0 / fac_min, fac / SAFETY))",
        "fac = max(1.0 / fac_max, min(1.0 / fac_min, fac * SAFETY))")], ACCURACY),
    M("dense-output-drops-top-power", "dense output loop stops one power of θ early (off by one)",
      [(INTEGRATE, "for q in range(P.shape[1]):", "for q in range(P.shape[1] - 1):")], ACCURACY),
    M("dense-coefficient-shifted", "two DOPRI5 dense-output coefficients shifted by ±1/1000 (their row "
      "sum, the θ = 1 value the tableau check sees, unchanged)",
      [("ufm/solvers.py", "(F(0), F(131558114200, 32700410799), F(-68118460800, 10900136933),",
        "(F(0), F(131558114200, 32700410799) + F(1, 1000), F(-68118460800, 10900136933) - F(1, 1000),")],
      ("test_solvers.py", "test_accuracy.py", "test_solve.py")),
    M("fsal-wrong-stage", "FSAL reuses stage s−2 instead of the last stage",
      [(INTEGRATE, "k[0, :] = k[s] if extended else k[s - 1]", "k[0, :] = k[s] if extended else k[s - 2]")], ACCURACY),
    M("fsal-across-breakpoint", "FSAL reuses the last stage after a breakpoint (f of the old Θ)",
      [(INTEGRATE, "if p_new == p and (fsal or extended):", "if fsal or extended:")], ("test_solve.py", "test_accuracy.py")),
    M("breakpoint-not-a-stop", "steps may cross a coupling breakpoint",
      [(INTEGRATE, "if p + 1 < n_pieces and theta_t[p + 1] < stop:",
        "if False and p + 1 < n_pieces and theta_t[p + 1] < stop:")], ("test_solve.py", "test_accuracy.py")),
    M("theta-piece-boundary", "a coupling piece starts just after its breakpoint (t > t_p, not >=)",
      [(FIELDS, "if t >= theta_t[q]:", "if t > theta_t[q]:")], ("test_solve.py", "test_accuracy.py", "test_train.py")),
    M("theta-piece-off-by-one", "the last coupling piece is never selected (loop bound off by one)",
      [(FIELDS, "for q in range(1, theta_t.shape[0]):", "for q in range(1, theta_t.shape[0] - 1):")],
      ("test_kernels_reference.py", "test_solve.py", "test_train.py")),
    # -- the vector fields -----------------------------------------------------------------------
    M("gram-dgw-drops-factor-2", "dG_W loses the 2 of 2λ_W G_W",
      [(FIELDS, "dGW[k, l] = -lr_w * (S[k, l] + S[l, k] + 2.0 * lam_w * GW[k, l])",
        "dGW[k, l] = -lr_w * (S[k, l] + S[l, k] + lam_w * GW[k, l])")], KERNELS),
    M("gram-dgw-not-symmetrised", "dG_W uses S + S instead of S + Sᵀ (a lost transpose)",
      [(FIELDS, "dGW[k, l] = -lr_w * (S[k, l] + S[l, k] + 2.0 * lam_w * GW[k, l])",
        "dGW[k, l] = -lr_w * (S[k, l] + S[k, l] + 2.0 * lam_w * GW[k, l])")], KERNELS),
    M("gram-dgh-transposed-product", "dG_H from (GᵀM + λG_H)Θ instead of (MᵀG + λG_H)Θ (matters only "
      "when Θ ≠ I)",
      [(FIELDS, "np.dot(M.T, G, U)", "np.dot(G.T, M, U)")], KERNELS),
    M("dh-drops-lambda-e", "dH loses the linear-features decay −η_H λ_E H",
      [(FIELDS, "dH[j, i] = -lr_h * (dH[j, i] + lam_e * H[j, i])", "dH[j, i] = -lr_h * dH[j, i]")], KERNELS),
    M("dw-decay-sign", "dW decay with the wrong sign (+λ_W W)",
      [(FIELDS, "dW[k, j] = -lr_w * (dW[k, j] + lam_w * W[k, j])", "dW[k, j] = -lr_w * (dW[k, j] - lam_w * W[k, j])")],
      KERNELS),
    M("softmax-max-not-subtracted", "the softmax shift starts from 0 instead of the column's first logit "
      "(so all-negative columns are not shifted to their maximum)",
      [(FIELDS, "colmax[i] = Z[0, i]\n", "colmax[i] = 0.0\n")], ("test_models.py", "test_kernels_reference.py")),
    M("ce-loss-drops-weights", "the CE loss value forgets the context weights π",
      [(FIELDS, "total -= pi[i] * y * (Z[k, i] - colmax[i])", "total -= y * (Z[k, i] - colmax[i])")],
      ("test_kernels_reference.py", "test_models.py", "test_solve.py")),
    # -- the optimisers --------------------------------------------------------------------------
    M("adam-no-bias-correction", "Adam without the bias correction of v",
      [(OPTIMIZERS, "vhat = buf2[m] / (1.0 - b2k)", "vhat = buf2[m]")], ("test_train.py",)),
    M("momentum-dampened", "heavy ball with dampening (1 − μ) on the gradient",
      [(OPTIMIZERS, "buf1[m] = mu * buf1[m] + g", "buf1[m] = mu * buf1[m] + (1.0 - mu) * g")], ("test_train.py",)),
    M("adamw-decay-uses-lr", "AdamW's decoupled decay uses lr instead of the block's step lr·η",
      [(OPTIMIZERS, "y[m] = y[m] - rate[m] * decay[m] * y[m]", "y[m] = y[m] - lr * decay[m] * y[m]")],
      ("test_train.py",)),
    M("adamw-h-decay-without-lambda-e", "AdamW's decay of H forgets λ_E",
      [("ufm/training.py", "lams = (model.lambda_W, model.lambda_H + model.lambda_E, model.lambda_b)",
        "lams = (model.lambda_W, model.lambda_H, model.lambda_b)")], ("test_train.py",)),
    M("sweep-kernel-config-0-coefficients", "the parallel sweep kernel gives every configuration the "
      "coefficients of configuration 0",
      [("ufm/kernels/sweep.py", "return Model(ip, models.coef[i],", "return Model(ip, models.coef[0],")], ("test_sweep.py",)),
    # -- validation ------------------------------------------------------------------------------
    # -- the engine's packing, the reduced space, the metrics layer --------------------------------
    M("pack-model-swaps-rates", "ufm.engine.pack_model swaps η_W and η_H",
      [("ufm/engine.py", "coef[_lay.C_LR_B] = model.lr_W, model.lr_H, model.lr_b",
        "coef[_lay.C_LR_B] = model.lr_H, model.lr_W, model.lr_b")],
      ("test_kernels_reference.py", "test_models.py")),
    M("reduced-dw-drops-factor-2", "the reduced field's dG_W drops the factor 2 of S + Sᵀ = 2S",
      [("ufm/kernels/reduced.py", "dy[ow + c] = -2.0 * lr_w *", "dy[ow + c] = -lr_w *")],
      ("test_reduced_space.py", "test_solve_reduced.py")),
    M("centred-cosine-not-centred", "cosine(centred=True) forgets to centre (the gap's default convention)",
      [("ufm/metrics.py", "        scale = _max_abs(G)\n        G = _double_centre(G)\n",
        "        scale = _max_abs(G)\n")],
      ("test_metrics_layer.py", "test_metrics.py")),
    M("check-times-allows-repeats", "save times only need to be non-decreasing",
      [("ufm/integration.py", "    if np.any(np.diff(t) <= 0):\n        i = int(",
        "    if np.any(np.diff(t) < 0):\n        i = int(")], ("test_solve.py",)),
    M("check-times-before-t0", "save times before t0 are accepted",
      [("ufm/integration.py", "if start is not None and t[0] < start:", "if False and start is not None and t[0] < start:")],
      ("test_solve.py",)),
    M("as-positive-accepts-zero", "as_positive lets 0 through",
      [("ufm/_validation.py", "    if not x > 0:\n", "    if x < 0:\n")], ("test_solve.py", "test_train.py")),
    M("psd-check-removed", "a coupling that is not positive semi-definite is accepted",
      [("ufm/_validation.py", "    if lo < -1e-9 * scale * theta.shape[0]:\n", "    if False:\n")],
      ("test_problems.py", "test_models.py")),
    M("lambda-b-without-bias-accepted", "lambda_b > 0 is accepted on a model without bias",
      [("ufm/models.py", "if self.lambda_b and not self.bias:", "if False:")], ("test_problems.py", "test_models.py")),
]


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------

def copy_tree(dest: Path) -> Path:
    """The working tree without version control, caches and build products."""
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.nbi", "*.nbc", ".pytest_cache", ".benchmarks",
                                    "*.egg-info", ".mypy_cache", ".ruff_cache")
    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


def apply(root: Path, mutation: Mutation) -> dict:
    """Apply every edit (each ``find`` exactly once); return {path: (original bytes, stat)}."""
    saved = {}
    for rel, find, replace in mutation.edits:
        path = root / rel
        if rel not in saved:
            saved[rel] = (path.read_bytes(), path.stat())
        text = path.read_text(encoding="utf-8")
        count = text.count(find)
        if count != 1:
            restore(root, saved)
            raise SystemExit(f"mutation {mutation.name!r}: expected the pattern exactly once in {rel}, found it "
                             f"{count} times — update tests/mutation.py:\n{find}")
        path.write_text(text.replace(find, replace), encoding="utf-8")
    return saved


def restore(root: Path, saved: dict) -> None:
    """Put back the original bytes and times (so the shared cache's source stamps still match)."""
    for rel, (data, st) in saved.items():
        path = root / rel
        path.write_bytes(data)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def run_pytest(root: Path, files, cache_dir: Path, workers: int) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(root), NUMBA_CACHE_DIR=str(cache_dir), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *files]
    if workers > 1:
        cmd += ["-n", str(workers)]
    res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    return res.returncode, res.stdout + res.stderr


def first_failure(output: str) -> str:
    m = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return m.group(1) if m else "(no FAILED line: see the output)"


def run_mutation(root: Path, mutation: Mutation, shared_cache: Path, scratch: Path, workers: int) -> dict:
    started = time.perf_counter()
    saved = apply(root, mutation)
    try:
        if mutation.touches_jitted:
            cache = Path(tempfile.mkdtemp(prefix="numba-", dir=scratch))
        else:
            cache = shared_cache
        code, output = run_pytest(root, mutation.tests, cache, workers)
        if mutation.touches_jitted:
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        restore(root, saved)
    # pytest exit codes: 0 all passed, 1 some test failed, 2+ interrupted / usage / collection error
    if code == 0:
        outcome, by = "SURVIVED", ""
    elif code == 1:
        outcome, by = "killed", first_failure(output)
    else:
        outcome, by = "error", first_failure(output) + f" (pytest exit {code})"
    return {"mutation": mutation, "outcome": outcome, "by": by, "seconds": time.perf_counter() - started,
            "output": output}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations")
    parser.add_argument("--jobs", type=int, default=1, help="mutations run at the same time (one copy each)")
    parser.add_argument("--workers", type=int, default=1, help="pytest-xdist workers per run (-n)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run (it also warms "
                        "the cache shared by mutations of non-jitted files)")
    parser.add_argument("--verbose", action="store_true", help="print pytest's output of survivors and errors")
    args = parser.parse_args(argv)

    chosen = MUTATIONS
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTATIONS}
        if unknown:
            parser.error(f"unknown mutation(s) {sorted(unknown)}; see --list")
        chosen = [m for m in MUTATIONS if m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:36s} {m.description}" + (f"  [{m.note}]" if m.note else ""))
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="ufm-mutation-"))
    try:
        jobs = max(1, min(args.jobs, len(chosen)))
        roots = [copy_tree(scratch / f"copy{j}") for j in range(jobs)]
        # every pattern must match in the copy before anything runs (fail fast, loudly)
        for m in chosen:
            restore(roots[0], apply(roots[0], m))
        shared = scratch / "numba-shared"
        if not args.no_baseline:
            files = sorted({f for m in chosen for f in m.tests})
            t0 = time.perf_counter()
            code, output = run_pytest(roots[0], files, shared, max(args.workers, 2))
            print(f"baseline: {'passed' if code == 0 else 'FAILED'} ({len(files)} files, "
                  f"{time.perf_counter() - t0:.0f} s)", flush=True)
            if code != 0:
                print(output[-3000:])
                return 1
        free = list(roots)      # a copy is taken by one running mutation at a time

        def task(m):
            root = free.pop()
            try:
                r = run_mutation(root, m, shared, scratch, args.workers)
            finally:
                free.append(root)
            line = f"{r['outcome']:8s} {m.name:36s} {r['seconds']:6.0f} s  {r['by']}"
            if m.note:
                line += f"  [{m.note}]"
            print(line, flush=True)
            if args.verbose and r["outcome"] != "killed":
                print(r["output"][-3000:])
            return r

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(task, chosen))
        survivors = [r["mutation"].name for r in results if r["outcome"] != "killed"]
        print(f"\n{len(results) - len(survivors)}/{len(results)} killed in {time.perf_counter() - t0:.0f} s; "
              f"survivors / errors: {', '.join(survivors) if survivors else 'none'}")
        return 1 if survivors else 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
