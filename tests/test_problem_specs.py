"""One problem-spec schema: `ufm run`'s [[settings]] tables and sweep specs build the same problems."""

import numpy as np
import pytest

import ufm
from ufm import problem_specs
from ufm.experiments import structure_before_collapse as job
from ufm.sweeps import specs as sweep_specs

CASES = [
    {"setting": "factorial", "levels": [2, 3], "samples_per_context": 2},
    {"setting": "hierarchy", "branching": 2, "depth": 2, "label_permutation": "random", "label_seed": 3},
    {"setting": "sequences", "classes": [2, 2], "tokens_per_class": 1, "labels": "soft", "support": 1},
    {"setting": "balanced", "K": 3, "n": 2},
]


def _same_problem(p, q):
    assert np.array_equal(p.Y, q.Y)
    assert (p.attributes is None) == (q.attributes is None)
    if p.attributes is not None:
        assert np.array_equal(p.attributes, q.attributes)
    assert sorted(p.similarities) == sorted(q.similarities)


@pytest.mark.parametrize("spec", CASES, ids=[c["setting"] for c in CASES])
def test_run_config_and_sweep_spec_build_the_same_problem(tmp_path, spec):
    lines = ["[[settings]]", 'name = "x"'] + [f"{k} = {_toml(v)}" for k, v in spec.items()]
    if spec["setting"] in ("sequences", "balanced"):     # no attribute similarity by default
        lines.append('similarity = "shared_token"' if spec["setting"] == "sequences" else 'similarity = "identity"')
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("\n".join(lines) + "\n")
    cfg = job.load_config(cfg_file)
    from_run = job.build_problem(cfg.settings[0])
    model, _ = sweep_specs.build({**spec, "d": 4})
    _same_problem(from_run, model.problem)
    direct = {"factorial": lambda: ufm.settings.factorial([2, 3], samples_per_context=2),
              "hierarchy": lambda: ufm.settings.hierarchy(2, 2, label_permutation="random", seed=3),
              "sequences": lambda: ufm.settings.sequences([2, 2], 1, labels="soft", support=1),
              "balanced": lambda: ufm.settings.balanced(3, 2)}[spec["setting"]]()
    _same_problem(from_run, direct)


def _toml(v):
    if isinstance(v, str):
        return f'"{v}"'
    return str(v).replace("'", '"')


def test_sweeps_now_take_sequences_and_its_defaults_hash_equal():
    a = sweep_specs.normalise_spec({"setting": "sequences", "d": 4}, space="gram")
    b = sweep_specs.normalise_spec({"setting": "sequences", "classes": [2, 2], "tokens_per_class": 2, "d": 4},
                                     space="gram")
    assert a == b and a["labels"] == "unique" and a["n_contexts"] is None


@pytest.mark.parametrize("spec, match", [
    ({"levels": [2, 2]}, "setting: expected one of"),
    ({"kind": "factorial", "levels": [2, 2]}, "the key is called 'setting'"),
    ({"setting": "factorial"}, "levels: required by setting 'factorial'"),
    ({"setting": "factorial", "levels": [2, 2], "depth": 2}, r"\['depth'\] do not apply to setting 'factorial'"),
    ({"setting": "balanced", "K": 3, "colour": 1}, r"unknown key\(s\) \['colour'\]"),
    ({"setting": "factorial", "levels": [2, 1.5]}, "levels: expected an integer"),
    ({"setting": "factorial", "levels": "22"}, "levels: expected a list of integers"),
    ({"setting": "sequences", "labels": "hard"}, "labels: expected one of"),
    ({"setting": "sequences", "n_contexts": 1}, "n_contexts: expected an integer >= 2"),
    ({"setting": "balanced", "K": True}, "K: expected an integer"),
])
def test_bad_problem_specs_name_the_key(spec, match):
    with pytest.raises((TypeError, ValueError), match=match):
        problem_specs.normalise_problem(spec)


def test_problems_are_built_once_per_normal_form():
    p = problem_specs.build_problem({"setting": "factorial", "levels": [2, 2]})
    q = problem_specs.build_problem({"setting": "factorial", "levels": (2, 2.0), "label_permutation": "none"})
    assert p is q
