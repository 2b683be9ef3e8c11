"""The size switches of the parameter-space field (ufm.kernels.fields.small_products and
SMALL_SOFTMAX_MAX), measured: one CE field evaluation per size with the products through BLAS
and through ufm.kernels.smallmm, and the softmax gradient through fields.logit_gradient (scalar
row passes), smallmm.softmax_gradient (8-column blocks) and smallmm.softmax_gradient_rows (8-lane
row passes). CPU time (time.process_time), best of 3 loops; the two product builds run in
alternate subprocesses (each compiles with its own threshold into its own numba cache, so the
switch is read at compile time as in use), ROUNDS rounds.

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.small_field [ROUNDS]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

SIZES = ((10, 16), (10, 64), (16, 32), (20, 20), (24, 24), (32, 32), (40, 48), (64, 64))
SOFTMAX_SIZES = ((10, 10), (7, 13), (20, 20), (32, 32), (48, 48), (64, 64), (128, 128), (512, 512))

_FIELD = r"""
import json, sys, time, numpy as np
import ufm.kernels.fields as kf
kf.SMALL_PRODUCTS_MAX = int(sys.argv[1])          # read when the field compiles
from numba import njit
import ufm
from ufm.reference import flatten

@njit
def loop(n, y, dy, ip, coef, Y, pi, theta, tab_i, tab_f, work):
    for _ in range(n):
        kf.field_of_parts(0, y, dy, ip, coef, Y, pi, theta, tab_i, tab_f, work)

out = {}
for K, d in json.loads(sys.argv[2]):
    model = ufm.UFM(ufm.settings.balanced(K), lambda_W=1e-3, lambda_H=1e-3)
    packed = ufm.engine.pack_model(model, "parameters", d)
    y = flatten(model.init(d, scale=0.3, seed=0))
    args = (y, np.empty_like(y), packed.ip, packed.coef, packed.Y, packed.pi, packed.theta, packed.tab_i,
            packed.tab_f, np.empty(kf.work_size(packed)))
    loop(1, *args)
    n = int(3e8 / (6 * K * K * d + 2000))
    best = float("inf")
    for _ in range(3):
        c0 = time.process_time()
        loop(n, *args)
        best = min(best, (time.process_time() - c0) / n)
    out[f"{K}x{d}"] = 1e6 * best
print(json.dumps(out))
"""


def field_rounds(rounds: int) -> dict:
    """{"blas": [{size: µs}, ...], "vector": [...]}, the two builds alternating."""
    res = {"blas": [], "vector": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for name, thr in (("blas", 0), ("vector", 1 << 40)):
                env = dict(os.environ, UFM_CACHE_DIR=os.path.join(tmp, name))
                run = subprocess.run([sys.executable, "-c", _FIELD, str(thr), json.dumps(SIZES)], env=env,
                                     capture_output=True, text=True, check=True)
                res[name].append(json.loads(run.stdout))
    return res


def softmax_times() -> dict:
    """size -> (logit_gradient µs, softmax_gradient µs, softmax_gradient_rows µs), alternating,
    best of 3 each; Z, G and the column buffers are slices of one buffer, as in the field's
    ``work``."""
    import numpy as np
    from numba import njit

    from ufm.kernels.fields import LOSS_CE, logit_gradient
    from ufm.kernels.smallmm import softmax_gradient, softmax_gradient_rows

    @njit
    def loop(n, Zf, Y, pi, Gf, cm, cs, K, N, which):
        Z = Zf.reshape(K, N)
        G = Gf.reshape(K, N)
        for _ in range(n):
            if which == 0:
                logit_gradient(Z, Y, pi, LOSS_CE, G, cm, cs, False)
            elif which == 1:
                softmax_gradient(Zf, Y, pi, Gf, K, N)
            else:
                softmax_gradient_rows(Zf, Y, pi, Gf, K, N, cm, cs)
    out = {}
    for K, N in SOFTMAX_SIZES:
        rng = np.random.default_rng(0)
        buf = np.empty(2 * K * N + 2 * N)
        Z, G, cm, cs = buf[:K * N], buf[K * N:2 * K * N], buf[2 * K * N:2 * K * N + N], buf[2 * K * N + N:]
        Z[:] = rng.normal(size=K * N) * 3
        Y, pi = np.eye(K, N), rng.random(N)
        n = int(3e7 / (K * N))
        best = [float("inf")] * 3
        for which in range(3):
            loop(1, Z, Y, pi, G, cm, cs, K, N, which)
        for _ in range(3):
            for which in range(3):
                c0 = time.process_time()
                loop(n, Z, Y, pi, G, cm, cs, K, N, which)
                best[which] = min(best[which], 1e6 * (time.process_time() - c0) / n)
        out[f"{K}x{N}"] = tuple(best)
    return out


def main(rounds: int = 3) -> None:
    res = field_rounds(rounds)
    print("field, µs per evaluation (K = N; range over rounds)")
    for K, d in SIZES:
        key = f"{K}x{d}"
        b = [r[key] for r in res["blas"]]
        v = [r[key] for r in res["vector"]]
        print(f"  K={K:3d} d={d:3d}  BLAS {min(b):7.3f}-{max(b):7.3f}   vector {min(v):7.3f}-{max(v):7.3f}")
    print("softmax gradient, µs (logit_gradient / softmax_gradient / softmax_gradient_rows)")
    for key, (a, b, c) in softmax_times().items():
        print(f"  {key:8s} {a:8.3f} {b:8.3f} {c:8.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
