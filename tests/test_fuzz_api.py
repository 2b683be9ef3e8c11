"""Property-based: generated bad inputs at the public API and the loaders (hypothesis).

Each test starts from a valid call and replaces one argument by a generated value (None,
booleans, huge or negative numbers, nan/inf, strings, bytes, lists, dicts, arrays of odd shapes
and dtypes, arbitrary objects). Whatever comes back must be a result, or a ValueError / TypeError
(FormatError for the bridge) whose message names the argument (the file, for loaders), or an
outcome the docstring documents (IntegrationError for solve/train, a UserWarning), within a few
seconds. Any other exception — KeyError, AttributeError, IndexError, a bare numpy error — or an
undocumented warning (numpy's overflow RuntimeWarning included) fails.

Generated files: a valid trajectory / run file with bytes flipped, cut or inserted must load or
raise a ValueError (FormatError) naming the file.

The runs are derandomised (the same examples every time, so CI is deterministic) and small:
``max_examples`` per test keeps the file at a few tens of seconds.
"""

import os
import shutil
import tempfile
import time
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ufm
import ufm.bridge as br
import ufm.theory as T
from ufm._validation import as_positive

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_RUN = os.path.join(ROOT, "tests", "data", "transformer_factorial_adamw.npz")

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SECONDS = 5.0          # per call; the slowest accepted call measured 0.3 s

PROBLEM = ufm.settings.factorial((2, 2))
MODEL = ufm.UFM(PROBLEM, lambda_W=1e-2, lambda_H=1e-2, coupling=PROBLEM.coupling("attribute", 1.0))
X0 = MODEL.init(4, seed=0)
T_SAVE = [0.5, 1.0]


class Opaque:
    """An object nothing in ufm knows about."""


JUNK = st.one_of(
    st.none(), st.booleans(),
    st.integers(-10 ** 20, 10 ** 20), st.integers(-3, 6),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e-320, 1e300, -1.0, 0.5]),
    st.text(max_size=4), st.binary(max_size=4),
    st.lists(st.integers(-3, 5), max_size=4), st.lists(st.floats(), max_size=3),
    st.lists(st.lists(st.integers(0, 2), min_size=2, max_size=2), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([np.array([[1.0, np.nan]]), np.zeros(0), np.zeros((2, 0)), np.ones((4, 4)), np.ones((3, 5)),
                     np.array(["a", "b"]), np.array([1 + 2j]), np.eye(4) * -1, np.arange(4), np.int64(3),
                     np.float64(np.inf), np.array(2.0), Opaque(), 1j, (1, 2), set()]),
)


def _number(value) -> bool:
    """A real scalar (not bool)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check(call, names, documented=()):
    """Run ``call``; an exception must be allowed and name one of ``names``; no undocumented
    warning; bounded time. Returns the result (or None)."""
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = call()
        except (ValueError, TypeError) as exc:
            msg = str(exc)
            assert any(n in msg for n in names), f"{type(exc).__name__} does not name {names}: {msg}"
            result = None
        except documented:
            result = None
    elapsed = time.perf_counter() - started
    assert elapsed < SECONDS, f"took {elapsed:.1f} s"
    bad = [w for w in caught if not issubclass(w.category, UserWarning) or issubclass(w.category, RuntimeWarning)]
    assert not bad, [f"{w.category.__name__}: {w.message}" for w in bad]
    return result


@pytest.fixture(scope="module", autouse=True)
def warm_kernels():
    """Compile the solve and train kernels once, outside the timed calls."""
    ufm.solve(MODEL, X0, T_SAVE)
    ufm.train(MODEL, X0, 2, 0.1)
    ufm.train(MODEL, X0, 2, 0.1, optimizer="adam")


@pytest.fixture(scope="module", autouse=True)
def small_machine():
    """Pretend 1 GiB of memory is available: a valid but huge input (a width of 10⁸, attribute
    values up to 10⁸, 10⁷ classes) is then refused by the same size guards instead of
    allocating gigabytes in the test."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("ufm._validation.available_memory", lambda: 2 ** 30)
        yield


# ------------------------------------------------------------------------------------------
# settings, problems, models
# ------------------------------------------------------------------------------------------

SETTINGS = {
    "factorial": (ufm.settings.factorial, {"levels": (2, 2)},
                  ["levels", "samples_per_context", "label_permutation", "seed", "name"]),
    "hierarchy": (ufm.settings.hierarchy, {"branching": 2, "depth": 2},
                  ["branching", "depth", "samples_per_context", "label_permutation", "seed"]),
    "balanced": (ufm.settings.balanced, {"K": 3, "n": 1}, ["K", "n"]),
    "sequences": (ufm.settings.sequences, {"classes": (2, 2), "tokens_per_class": 1},
                  ["classes", "tokens_per_class", "labels", "support", "n_contexts", "seed"]),
}


@FUZZ
@given(kind=st.sampled_from(sorted(SETTINGS)), data=st.data())
def test_settings(kind, data, monkeypatch):
    # a lower cap on contexts: the guard is exercised the same way, and every valid example
    # stays small (a valid setting near the real cap of 4096 contexts takes ~30 s)
    monkeypatch.setattr(ufm.settings, "MAX_CONTEXTS", 256)
    fn, base, names = SETTINGS[kind]
    arg = data.draw(st.sampled_from(names))
    value = data.draw(JUNK)
    kw = {**base, arg: value}
    aliases = [arg] + (["branching, depth"] if kind == "hierarchy" else []) + (["K, n"] if kind == "balanced" else [])
    aliases += ["classes, tokens_per_class"] if kind == "sequences" else []
    result = check(lambda: fn(**kw), aliases)
    assert result is None or isinstance(result, ufm.Problem)


@FUZZ
@given(arg=st.sampled_from(["Y", "weights", "attributes", "similarities", "relations", "relation_names"]),
       value=JUNK)
def test_problem(arg, value):
    base = {"Y": np.eye(3), "weights": None, "attributes": None}
    kw = {**base, arg: value}
    if arg in ("relation_names",):
        kw["relations"] = [np.eye(3), 1 - np.eye(3)]
    check(lambda: ufm.Problem(**kw), [arg, "relations"])


@FUZZ
@given(value=JUNK)
def test_problem_from_dict(value):
    check(lambda: ufm.Problem.from_dict(value), ["d:", "Y", "weights", "attributes", "relations", "name"])
    check(lambda: ufm.Problem.from_dict({"Y": value}), ["Y"])


@FUZZ
@given(labels=JUNK, K=JUNK)
def test_problem_classification(labels, K):
    check(lambda: ufm.Problem.classification(labels, K), ["labels", "K"])


MODEL_ARGS = ["loss", "lambda_W", "lambda_H", "lambda_E", "bias", "lambda_b", "coupling", "lr_W", "lr_H", "lr_b"]


@FUZZ
@given(arg=st.sampled_from(MODEL_ARGS + ["problem"]), value=JUNK)
def test_model(arg, value):
    kw = {"problem": PROBLEM, arg: value}
    check(lambda: ufm.UFM(**kw), [arg, "kernels"])


@FUZZ
@given(arg=st.sampled_from(["d", "scale", "seed"]), value=JUNK)
def test_init(arg, value):
    kw = {"d": 4, "scale": 1e-3, "seed": 0, arg: value}
    result = check(lambda: MODEL.init(**kw), [arg])
    assert result is None or (np.all(np.isfinite(result.W)) and result.W.shape[0] == MODEL.K)


@FUZZ
@given(arg=st.sampled_from(["W", "H", "b"]), value=JUNK)
def test_state(arg, value):
    kw = {"W": X0.W, "H": X0.H, "b": None, arg: value}
    check(lambda: MODEL.state(**kw), [arg, "state"])


# ------------------------------------------------------------------------------------------
# solve and train
# ------------------------------------------------------------------------------------------

SOLVE_ARGS = ["model", "init", "t", "method", "rtol", "atol", "space", "save", "t0", "dt", "max_steps", "h_max",
              "progress"]


@FUZZ
@given(arg=st.sampled_from(SOLVE_ARGS), value=JUNK)
def test_solve(arg, value):
    kw = {"model": MODEL, "init": X0, "t": T_SAVE, "max_steps": 20_000, arg: value}
    result = check(lambda: ufm.solve(**kw), [arg, "init", "save times"], documented=(ufm.IntegrationError,))
    assert result is None or len(result) == np.size(kw["t"])


TRAIN_ARGS = ["model", "init", "steps", "lr", "optimizer", "momentum", "nesterov", "betas", "eps", "save_steps",
              "save"]


@FUZZ
@given(arg=st.sampled_from(TRAIN_ARGS), value=JUNK, optimizer=st.sampled_from(["gd", "momentum", "adam", "adamw"]))
def test_train(arg, value, optimizer):
    if arg == "steps" and _number(value) and 1000 < value < 2 ** 62:
        value = -value                 # a valid huge step count is a long run, not a bad input
    kw = {"model": MODEL, "init": X0, "steps": 20, "lr": 0.1, "optimizer": optimizer, arg: value}
    result = check(lambda: ufm.train(**kw), [arg, "init"], documented=(ufm.IntegrationError,))
    assert result is None or result.steps[-1] == kw["steps"]


@FUZZ
@given(name=st.sampled_from(["etf_distance", "semantic_gap", "effective_rank", "nc1", "norm_H", "bogus"]),
       threshold=JUNK, kw=st.dictionaries(st.sampled_from(["which", "labels", "attributes", "attribute"]), JUNK,
                                          max_size=1))
def test_trajectory_metrics(name, threshold, kw):
    tr = TRAJ
    check(lambda: tr.metric(name, **kw), ["name", *kw, "gram_W"])
    check(lambda: tr.transient_summary(threshold=threshold), ["threshold"])


TRAJ = ufm.solve(MODEL, X0, np.geomspace(1e-2, 1e2, 8), save="all")


# ------------------------------------------------------------------------------------------
# theory entry points (the argument checks only: valid inputs run sympy derivations)
# ------------------------------------------------------------------------------------------

@FUZZ
@given(value=JUNK.filter(lambda v: not isinstance(v, (ufm.UFM, ufm.Problem))), scale=JUNK)
def test_theory_arguments(value, scale):
    check(lambda: T.fixed_point(value), ["model"])
    check(lambda: T.bind(value), ["problem"])
    check(lambda: T.semantic_peak(value, 1e-3), ["model"])
    check(lambda: T.saxe_modes(value, 1e-3), ["model"])
    try:
        as_positive(scale, "scale")
    except (TypeError, ValueError):
        check(lambda: T.semantic_peak(MODEL, scale), ["scale"])      # a valid scale would run sympy


# ------------------------------------------------------------------------------------------
# the bridge: export arguments, load options, corrupted files
# ------------------------------------------------------------------------------------------

RUN = br.load(REAL_RUN)
EXPORT = {"steps": RUN.steps[:3], "H": RUN.H[:3], "W": RUN.W[:3], "labels": RUN.labels}
EXPORT_ARGS = ["steps", "H", "W", "labels", "Y", "b", "attributes", "loss", "kernel", "kernel_steps", "lr",
               "weight_decay", "meta", "format", "dtype", "checkpoint_format", "append", "compress"]


@FUZZ
@given(arg=st.sampled_from(EXPORT_ARGS), value=JUNK)
def test_export(tmp_path, arg, value):
    kw = {**EXPORT, arg: value}
    path = tmp_path / f"run-{abs(hash((arg, repr(value))))}.npz"
    result = check(lambda: br.export(path, **kw), [arg, "labels"])
    if result is not None:
        assert br.load(result).T == 3          # whatever was written reads back


@FUZZ
@given(arg=st.sampled_from(["tag", "mmap", "allow_pickle", "h_layout", "labels", "Y", "attributes", "meta"]),
       value=JUNK)
def test_load_options(arg, value):
    check(lambda: br.load(REAL_RUN, **{arg: value}), [arg])


def _mutations():
    """(kind, position fraction, payload): flip, cut or insert bytes somewhere in a file."""
    return st.tuples(st.sampled_from(["flip", "cut", "insert", "zero"]), st.floats(0, 1), st.binary(min_size=1,
                                                                                                     max_size=16))


def _mutate(raw: bytes, mutation) -> bytes:
    kind, where, payload = mutation
    i = min(int(where * len(raw)), len(raw) - 1)
    if kind == "flip":
        return raw[:i] + bytes(b ^ 0xFF for b in raw[i:i + len(payload)]) + raw[i + len(payload):]
    if kind == "cut":
        return raw[:i]
    if kind == "zero":
        return raw[:i] + b"\x00" * len(payload) + raw[i + len(payload):]
    return raw[:i] + payload + raw[i:]


def _valid_files() -> dict:
    """The bytes of a valid trajectory, run .npz and run .safetensors (module-level, not a
    fixture, so that a falsifying example does not print them)."""
    folder = tempfile.mkdtemp(prefix="ufm-fuzz-")
    try:
        paths = {"traj": TRAJ.save(os.path.join(folder, "traj.npz")),
                 "npz": br.export(os.path.join(folder, "run.npz"), **EXPORT, compress=False),
                 "safetensors": br.export(os.path.join(folder, "run.safetensors"), **EXPORT)}
        return {name: open(p, "rb").read() for name, p in paths.items()}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


VALID_FILES = _valid_files()


@FUZZ
@given(mutation=_mutations())
def test_corrupted_trajectory_files(tmp_path, mutation):
    path = tmp_path / "traj.npz"
    path.write_bytes(_mutate(VALID_FILES["traj"], mutation))
    result = check(lambda: ufm.Trajectory.load(path), [str(path)])
    assert result is None or isinstance(result, ufm.Trajectory)


@FUZZ
@given(kind=st.sampled_from(["npz", "safetensors"]), mutation=_mutations())
def test_corrupted_run_files(tmp_path, kind, mutation):
    path = tmp_path / f"run.{kind}"
    path.write_bytes(_mutate(VALID_FILES[kind], mutation))
    result = check(lambda: br.load(path), [str(path)])
    assert result is None or isinstance(result, br.Run)
