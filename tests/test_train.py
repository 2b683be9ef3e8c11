"""Tests of ``ufm.train``: the discrete optimisers against Euler, the numpy reference and
independently written PyTorch-style loops.

Conventions (docs/model.md): W is K×d, H is d×N, Z = WH + b1ᵀ. With F the flow's right-hand
side (``UFM.vector_field``), gradient descent with learning rate h is x ← x + h·F(x), i.e. the
explicit Euler method with step h, so the two must agree bit for bit whenever they perform the
same floating-point operations.
"""

from __future__ import annotations

import numpy as np
import pytest

import ufm
from ufm.models import GramState, PiecewiseCoupling, State
from ufm.kernels.optimizers import DIVERGED
from ufm.reference import euler_train_reference
from systems import pd_kernel, soft_label_problem

ARRAYS = ("t", "loss", "data_loss", "W", "H", "b", "gram_W", "gram_H", "logits")


# ------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------

def _problem(shape: str):
    """"square": the 6-context factorial (2×3), K = N = 6; "samples": the same with two samples
    per context, K = 6 < N = 12; "soft": soft labels and unequal weights, K = 5 > N = 3."""
    if shape == "square":
        return ufm.settings.factorial((2, 3))
    if shape == "samples":
        return ufm.settings.factorial((2, 3), samples_per_context=2)
    return soft_label_problem(5, 3, seed=2)


def coupled_model(loss: str, bias: bool, shape: str = "square", **kw) -> ufm.UFM:
    """Attribute coupling β = 0.7 (a positive definite kernel for the soft problem), all decays
    on, distinct non-unit block rates η_W ≠ η_H ≠ η_b (so a rate that is dropped, applied
    twice or used for the wrong block shows up)."""
    problem = _problem(shape)
    theta = problem.coupling("attribute", 0.7) if problem.attributes is not None else pd_kernel(problem.N, 4)
    params = dict(loss=loss, lambda_W=2e-2, lambda_H=3e-2, lambda_E=1e-2, bias=bias,
                  lambda_b=5e-2 if bias else 0.0, coupling=theta,
                  lr_W=1.7, lr_H=0.6, lr_b=1.3 if bias else 1.0)
    params.update(kw)
    return ufm.UFM(problem, **params)


def rel_err(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


MODEL_CASES = [("ce", False), ("ce", True), ("mse", False), ("mse", True)]
# the reference comparisons also run on K != N problems, where a loop over the wrong size or a
# transposed product shows; with a bias there, since its sum runs over the N contexts
SHAPE_CASES = [("square", loss, bias) for loss, bias in MODEL_CASES] + [
    (shape, loss, True) for shape in ("samples", "soft") for loss in ("ce", "mse")]


# ------------------------------------------------------------------------------------------
# GD == Euler
# ------------------------------------------------------------------------------------------

def _compare_gd_euler(model, x0, h, save_steps):
    steps = int(save_steps[-1])
    gd = ufm.train(model, x0, steps, lr=h, optimizer="gd", save_steps=save_steps, save="all")
    eu = ufm.solve(model, x0, t=h * save_steps, method="euler", dt=h, save="all")
    names = [n for n in ARRAYS if getattr(eu, n) is not None]
    assert set(names) >= {"t", "loss", "data_loss", "W", "H", "gram_W", "gram_H", "logits"}
    assert (getattr(gd, "b") is not None) == model.bias == (getattr(eu, "b") is not None)
    assert len(gd) == len(eu) == len(save_steps)
    return gd, eu, names


@pytest.mark.parametrize("loss,bias", MODEL_CASES)
def test_gd_equals_euler_bit_for_bit(loss, bias):
    # h = 2⁻³: every multiple h·k (the save times and Euler's accumulated clock) is exact in
    # binary, so Euler takes exactly the steps GD takes and both perform the same operations
    # x + h·F(x): the results must be identical, not merely close.
    model = coupled_model(loss, bias)
    x0 = model.init(7, scale=0.8, seed=11)
    if bias:
        x0 = model.state(x0.W, x0.H, np.linspace(-0.3, 0.4, model.K))
    h = 0.125
    save_steps = np.array([0, 1, 2, 5, 17, 64, 150])
    gd, eu, names = _compare_gd_euler(model, x0, h, save_steps)
    for n in names:
        assert np.array_equal(getattr(gd, n), getattr(eu, n)), n
    # the run moved: an exact match of two frozen states would prove nothing
    assert rel_err(gd.H[-1], gd.H[0]) > 1e-2
    assert gd.loss[-1] < gd.loss[0]


# A non-dyadic step: the accumulated clock t = h + h + … is not exactly k·h, so Euler must
# not shorten a step that lands on a save time only to rounding (it keeps h, t snaps).
@pytest.mark.parametrize("loss,bias", MODEL_CASES)
def test_gd_equals_euler_bit_for_bit_non_dyadic_step(loss, bias):
    model = coupled_model(loss, bias)
    x0 = model.init(7, scale=0.8, seed=12)
    h = 0.1
    save_steps = np.array([0, 1, 3, 10, 57, 150])
    gd, eu, names = _compare_gd_euler(model, x0, h, save_steps)
    for n in names:
        assert np.array_equal(getattr(gd, n), getattr(eu, n)), n


@pytest.mark.parametrize("loss,bias", MODEL_CASES)
def test_gd_equals_euler_to_rounding_non_dyadic_step(loss, bias):
    # Whatever the clock does, the two are the same map up to rounding of the step length.
    model = coupled_model(loss, bias)
    x0 = model.init(7, scale=0.8, seed=12)
    h = 0.1
    save_steps = np.array([0, 1, 3, 10, 57, 150])
    gd, eu, names = _compare_gd_euler(model, x0, h, save_steps)
    assert np.array_equal(gd.t, eu.t)
    for n in names:
        np.testing.assert_allclose(getattr(gd, n), getattr(eu, n), rtol=1e-12, atol=1e-14, err_msg=n)


@pytest.mark.parametrize("shape,loss,bias", SHAPE_CASES)
def test_gd_matches_numpy_reference(shape, loss, bias):
    # euler_train_reference is a plain numpy loop on UFM.vector_field: same maths, different
    # summation order (BLAS vs numba loops), so agreement is to rounding accumulated over the
    # run; 1e-12 relative leaves ~1e3 ulps of slack for 300 contracting steps.
    model = coupled_model(loss, bias, shape)
    x0 = model.init(6, scale=0.7, seed=3)
    steps, lr = 300, 0.2
    traj = ufm.train(model, x0, steps, lr=lr, save_steps=[0, steps], save="all")
    ref = euler_train_reference(model, x0, steps, lr)
    assert np.array_equal(traj.W[0], x0.W) and np.array_equal(traj.H[0], x0.H)
    assert rel_err(traj.W[-1], ref.W) < 1e-12
    assert rel_err(traj.H[-1], ref.H) < 1e-12
    if bias:
        assert rel_err(traj.b[-1], ref.b) < 1e-12
    np.testing.assert_allclose(traj.loss[-1], model.loss(ref), rtol=1e-12)
    assert rel_err(ref.H, x0.H) > 1e-2


def test_gd_piecewise_coupling_uses_piece_at_time_lr_times_step():
    # Θ switches at t = 1.0; with lr = 0.25 steps 0-3 use piece 0 and steps >= 4 piece 1.
    problem = ufm.settings.factorial((2, 2))
    kernels = np.stack([problem.coupling("attribute", 1.0), np.eye(problem.N) * 2.0])
    model = ufm.UFM(problem, loss="ce", coupling=PiecewiseCoupling([0.0, 1.0], kernels), lr_H=0.8)
    x0 = model.init(5, scale=1.0, seed=0)
    lr, steps = 0.25, 12
    W, H = np.array(x0.W), np.array(x0.H)
    for k in range(steps):
        v = model.vector_field(State(W, H), t=k * lr)
        W, H = W + lr * v.W, H + lr * v.H
    traj = ufm.train(model, x0, steps, lr=lr, save_steps=[steps], save=("W", "H"))
    assert rel_err(traj.W[-1], W) < 1e-13
    assert rel_err(traj.H[-1], H) < 1e-13
    # and the switch matters: with piece 0 throughout the result is different
    W0, H0 = np.array(x0.W), np.array(x0.H)
    for k in range(steps):
        v = model.vector_field(State(W0, H0), t=0.0)
        W0, H0 = W0 + lr * v.W, H0 + lr * v.H
    assert rel_err(H0, H) > 1e-3


# ------------------------------------------------------------------------------------------
# momentum, Adam, AdamW against PyTorch-style numpy loops
# ------------------------------------------------------------------------------------------

def _blocks(state: State):
    return [state.W, state.H] + ([] if state.b is None else [state.b])


def _field(model, blocks) -> list:
    W, H = blocks[0], blocks[1]
    b = blocks[2] if len(blocks) == 3 else None
    return _blocks(model.vector_field(State(W, H, b)))


def sgd_reference(model, x0, steps, lr, mu, nesterov):
    """torch.optim.SGD(lr, momentum=mu, dampening=0, nesterov) on g = −F (F carries η and the
    coupled decays, as the flow does)."""
    p = [np.array(a) for a in _blocks(x0)]
    buf = None
    for k in range(steps):
        g = [-f for f in _field(model, p)]
        if k == 0:
            buf = [gi.copy() for gi in g]
        else:
            buf = [mu * bi + gi for bi, gi in zip(buf, g)]
        d = [gi + mu * bi for gi, bi in zip(g, buf)] if nesterov else buf
        p = [pi - lr * di for pi, di in zip(p, d)]
    return p


def adam_reference(model, x0, steps, lr, betas, eps, decoupled):
    """torch.optim.Adam / AdamW with one parameter group per block, lr_group = lr·η_block.

    g is the flow's descent direction with all rates η = 1 (Adam); for AdamW g is also
    decay-free and each group has weight_decay λ_block (λ_H + λ_E for H), applied as
    p ← p·(1 − lr_group·λ_block) before the Adam step."""
    b1, b2 = betas
    free = model.replace(lr_W=1.0, lr_H=1.0, lr_b=1.0)
    if decoupled:
        free = free.replace(lambda_W=0.0, lambda_H=0.0, lambda_E=0.0, lambda_b=0.0)
    group_lr = [lr * model.lr_W, lr * model.lr_H, lr * model.lr_b]
    group_wd = [model.lambda_W, model.lambda_H + model.lambda_E, model.lambda_b]
    p = [np.array(a) for a in _blocks(x0)]
    m = [np.zeros_like(a) for a in p]
    v = [np.zeros_like(a) for a in p]
    for k in range(1, steps + 1):
        g = [-f for f in _field(free, p)]
        new = []
        for i, (pi, gi) in enumerate(zip(p, g)):
            if decoupled:
                pi = pi * (1.0 - group_lr[i] * group_wd[i])
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            bc1 = 1 - b1 ** k
            bc2 = 1 - b2 ** k
            denom = np.sqrt(v[i]) / np.sqrt(bc2) + eps
            new.append(pi - (group_lr[i] / bc1) * m[i] / denom)
        p = new
    return p


def _assert_blocks_close(traj, ref, x0, rtol):
    got = [traj.W[-1], traj.H[-1]] + ([] if traj.b is None else [traj.b[-1]])
    assert len(got) == len(ref)
    for name, a, r in zip("WHb", got, ref):
        assert rel_err(a, r) < rtol, name
    # the optimiser actually moved every block away from the start
    for name, a, r0 in zip("WH", got, _blocks(x0)):
        assert rel_err(a, r0) > 1e-2, name


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("shape,loss,bias", [("square", "ce", True), ("square", "mse", False),
                                             ("samples", "mse", True), ("soft", "ce", True)])
def test_momentum_matches_pytorch_sgd_loop(shape, loss, bias, nesterov):
    # 1e-10: both loops compute the same expressions; they differ only in BLAS vs loop
    # summation order (1e-16 per step) amplified over 300 steps of a contracting map.
    model = coupled_model(loss, bias, shape)
    x0 = model.init(6, scale=0.7, seed=5)
    steps, lr, mu = 300, 0.05, 0.9
    traj = ufm.train(model, x0, steps, lr=lr, optimizer="momentum", momentum=mu, nesterov=nesterov,
                     save_steps=[0, steps], save="all")
    ref = sgd_reference(model, x0, steps, lr, mu, nesterov)
    _assert_blocks_close(traj, ref, x0, 1e-10)


def test_momentum_and_nesterov_differ_and_zero_momentum_is_gd():
    model = coupled_model("ce", False)
    x0 = model.init(6, scale=0.7, seed=5)
    kw = dict(save_steps=[50], save=("H",))
    hb = ufm.train(model, x0, 50, lr=0.05, optimizer="momentum", momentum=0.9, **kw)
    nv = ufm.train(model, x0, 50, lr=0.05, optimizer="momentum", momentum=0.9, nesterov=True, **kw)
    assert rel_err(hb.H[-1], nv.H[-1]) > 1e-4
    # μ = 0: buf = g every step, x − lr·g = x + lr·F: the same floating-point operations as GD
    m0 = ufm.train(model, x0, 50, lr=0.05, optimizer="momentum", momentum=0.0, **kw)
    gd = ufm.train(model, x0, 50, lr=0.05, optimizer="gd", **kw)
    assert np.array_equal(m0.H, gd.H)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
@pytest.mark.parametrize("shape,loss,bias", [("square", "ce", True), ("square", "mse", False),
                                             ("samples", "ce", True), ("soft", "mse", True)])
def test_adam_matches_pytorch_loop(optimizer, shape, loss, bias):
    # The two loops differ only in rounding (the library writes m̂/(√(v/bc2) + ε), torch
    # (m/bc1)/(√v/√bc2 + ε)), hence 1e-10 after 300 steps. That is only meaningful while Adam
    # is well conditioned: near a minimum (MSE reaches one quickly at lr = 1e-2) the gradient
    # is ~0, m/√v normalises rounding noise to O(lr) steps and a 1-ulp perturbation grows to
    # 1e-4 in a few hundred steps. lr = 1e-3 keeps the run in the transient; the conditioning
    # check below (the reference against itself from a 1-ulp-perturbed start) guards that.
    model = coupled_model(loss, bias, shape)
    x0 = model.init(6, scale=0.7, seed=8)
    steps, lr, betas, eps = 300, 1e-3, (0.8, 0.99), 1e-8
    decoupled = optimizer == "adamw"
    traj = ufm.train(model, x0, steps, lr=lr, optimizer=optimizer, betas=betas, eps=eps,
                     save_steps=[0, 100, steps], save="all")
    ref = adam_reference(model, x0, steps, lr, betas, eps, decoupled=decoupled)
    nudged = State(x0.W * (1 + 2.0 ** -52), x0.H, x0.b)
    ref_nudged = adam_reference(model, nudged, steps, lr, betas, eps, decoupled=decoupled)
    assert max(rel_err(a, r) for a, r in zip(ref_nudged, ref)) < 1e-12
    _assert_blocks_close(traj, ref, x0, 1e-10)
    # the recorded objective is the full model's, whatever direction the optimiser used
    st = State(traj.W[-1], traj.H[-1], None if traj.b is None else traj.b[-1])
    np.testing.assert_allclose(traj.loss[-1], model.loss(st), rtol=1e-12)


def test_adam_and_adamw_differ_when_decay_is_on_and_agree_without_it():
    model = coupled_model("ce", False)
    x0 = model.init(6, scale=0.7, seed=8)
    kw = dict(lr=1e-2, save_steps=[100], save=("W", "H"))
    a = ufm.train(model, x0, 100, optimizer="adam", **kw)
    aw = ufm.train(model, x0, 100, optimizer="adamw", **kw)
    assert rel_err(a.H[-1], aw.H[-1]) > 1e-4
    free = model.replace(lambda_W=0.0, lambda_H=0.0, lambda_E=0.0)
    a0 = ufm.train(free, x0, 100, optimizer="adam", **kw)
    aw0 = ufm.train(free, x0, 100, optimizer="adamw", **kw)
    # with every λ = 0 AdamW multiplies by (1 − r·0) = 1 exactly and uses the same gradient
    assert np.array_equal(a0.H, aw0.H) and np.array_equal(a0.W, aw0.W)


# ------------------------------------------------------------------------------------------
# divergence
# ------------------------------------------------------------------------------------------

def test_divergence_raises_with_step_and_partial_trajectory():
    problem = ufm.settings.balanced(4)
    model = ufm.UFM(problem, loss="mse")
    x0 = model.init(6, scale=1.0, seed=2)
    lr = 5.0
    # independent reference (raw MSE formulas, no State validation so overflow can happen):
    # the first step after which some parameter is non-finite or exceeds the documented
    # divergence threshold DIVERGED. The growth is super-exponential (|W| ~ 1e5, 1e11, 1e35,
    # 1e105, inf on steps 4-8), so rounding differences cannot move the crossing by a step.
    Y, pi = problem.Y, problem.weights
    W, H = np.array(x0.W), np.array(x0.H)
    fail = None
    with np.errstate(all="ignore"):
        for k in range(1, 200):
            G = (W @ H - Y) * pi
            W, H = W - lr * (G @ H.T), H - lr * (W.T @ G)
            if not (np.all(np.abs(W) <= DIVERGED) and np.all(np.abs(H) <= DIVERGED)):
                fail = k
                break
    assert fail is not None and fail > 3  # not immediate: some saves happen before it
    save_steps = np.arange(0, 200, 3)
    with pytest.raises(ufm.IntegrationError) as info:
        ufm.train(model, x0, 199, lr=lr, save_steps=save_steps, save="all")
    err = info.value
    assert err.reason == "nonfinite"
    assert err.step == fail and err.t == lr * fail     # t is ODE time, like the trajectory's
    traj = err.trajectory
    expected = save_steps[save_steps < fail]
    assert len(traj) == expected.size
    assert np.array_equal(traj.steps, expected)
    assert np.array_equal(traj.t, lr * expected)
    for n in ("loss", "data_loss", "W", "H", "gram_W", "gram_H", "logits"):
        arr = getattr(traj, n)
        assert arr.shape[0] == expected.size
        assert np.all(np.isfinite(arr)), n
    assert str(fail) in str(err)


# ------------------------------------------------------------------------------------------
# trajectory bookkeeping and I/O
# ------------------------------------------------------------------------------------------

def test_trajectory_steps_and_times():
    model = coupled_model("ce", True)
    x0 = model.init(5, seed=1)
    lr = 0.3
    save_steps = [0, 3, 7, 40]
    traj = ufm.train(model, x0, 40, lr=lr, save_steps=save_steps)
    assert traj.steps.dtype.kind == "i"
    assert np.array_equal(traj.steps, save_steps)
    assert np.array_equal(traj.t, lr * np.array(save_steps, dtype=float))
    assert traj.info["optimizer"] == "gd" and traj.info["lr"] == lr
    assert traj.model is model and traj.problem is model.problem
    # default save: Grams and logits, not the parameters
    assert traj.W is None and traj.H is None
    assert traj.gram_H.shape == (4, model.N, model.N) and traj.logits.shape == (4, model.K, model.N)
    # logits include the bias: Z = WH + b1ᵀ
    full = ufm.train(model, x0, 40, lr=lr, save_steps=save_steps, save="all")
    np.testing.assert_allclose(full.logits, full.W @ full.H + full.b[:, :, None], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(full.gram_H, np.transpose(full.H, (0, 2, 1)) @ full.H, rtol=1e-13, atol=1e-15)


def test_default_save_steps_end_at_steps():
    model = coupled_model("mse", False)
    x0 = model.init(5, seed=1)
    traj = ufm.train(model, x0, 500, lr=0.1)
    assert traj.steps[0] == 0 and traj.steps[-1] == 500
    assert np.all(np.diff(traj.steps) > 0)
    assert 20 <= len(traj) <= 61
    zero = ufm.train(model, x0, 0, lr=0.1, save="all")
    assert np.array_equal(zero.steps, [0]) and np.array_equal(zero.H[0], x0.H)


def test_training_trajectory_save_load_round_trip(tmp_path):
    model = coupled_model("ce", True)
    x0 = model.init(5, seed=4)
    traj = ufm.train(model, x0, 60, lr=0.02, optimizer="adamw", save_steps=[0, 5, 60], save="all")
    path = traj.save(tmp_path / "run")
    assert path.endswith(".npz")
    back = ufm.Trajectory.load(path)
    for n in ("t", "steps", "loss", "data_loss", "W", "H", "b", "gram_W", "gram_H", "logits"):
        a, b = getattr(traj, n), getattr(back, n)
        assert a is not None and b is not None, n
        assert a.dtype == b.dtype and np.array_equal(a, b), n
    assert back.problem == traj.problem
    assert back.model == traj.model
    assert back.problem.relation_names == traj.problem.relation_names
    assert back.info == traj.info


# ------------------------------------------------------------------------------------------
# bad arguments
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    model = ufm.UFM(ufm.settings.balanced(3), loss="ce")
    return model, model.init(4, seed=0)


@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(lr=-0.1), ValueError, "lr"),
    (dict(lr=0.0), ValueError, "lr"),
    (dict(lr="0.1"), TypeError, "lr"),
    (dict(steps=-1), ValueError, "steps"),
    (dict(steps=2.5), TypeError, "steps"),
    (dict(steps=True), TypeError, "steps"),
    (dict(optimizer="sgd"), ValueError, "optimizer"),
    (dict(optimizer="momentum", momentum=1.0), ValueError, "momentum"),
    (dict(optimizer="momentum", momentum=1.5), ValueError, "momentum"),
    (dict(momentum=-0.1), ValueError, "momentum"),
    (dict(betas=(0.9, 1.0)), ValueError, "betas"),
    (dict(betas=0.9), TypeError, "betas"),
    (dict(eps=0.0), ValueError, "eps"),
    (dict(save_steps=[0, 5, 5]), ValueError, "save_steps"),
    (dict(save_steps=[5, 2]), ValueError, "save_steps"),
    (dict(save_steps=[]), ValueError, "save_steps"),
    (dict(save_steps=[0, 11]), ValueError, "save_steps"),
    (dict(save_steps=[-1, 3]), ValueError, "save_steps"),
    (dict(save_steps=[0, 2.5]), ValueError, "save_steps"),
    (dict(save="gram"), ValueError, "save"),
    (dict(save=("W", "Z")), ValueError, "save"),
    (dict(save=3), TypeError, "save"),
])
def test_bad_arguments_are_named(small, kwargs, exc, name):
    model, x0 = small
    args = dict(steps=10, lr=0.1)
    args.update(kwargs)
    steps, lr = args.pop("steps"), args.pop("lr")
    with pytest.raises(exc, match=rf"^{name}\b"):
        ufm.train(model, x0, steps, lr, **args)


def test_bad_model_and_init_are_named(small):
    model, x0 = small
    with pytest.raises(TypeError, match=r"^init\b"):
        ufm.train(model, x0.grams(), 10, 0.1)
    with pytest.raises(TypeError, match=r"^init\b"):
        ufm.train(model, (x0.W, x0.H), 10, 0.1)
    with pytest.raises(TypeError, match=r"^model\b"):
        ufm.train("ce", x0, 10, 0.1)
    wrong_N = ufm.UFM(ufm.settings.balanced(3, 2))
    with pytest.raises(ValueError, match=r"^init\b"):
        ufm.train(wrong_N, x0, 10, 0.1)
    with_bias = model.replace(bias=True)
    with pytest.raises(ValueError, match=r"^init\b.*bias"):
        ufm.train(with_bias, x0, 10, 0.1)
    assert isinstance(x0.grams(), GramState)
