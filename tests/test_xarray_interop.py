"""xarray / pandas interop (ufm/xarray_interop.py): round trips through netCDF and zarr keep every
value bit for bit and every attribute; a sweep over a full product unstacks into labelled
dimensions; a missing optional package names the extra that installs it."""

import json
import sys

import numpy as np
import pytest
import xarray as xr

import ufm
from ufm import xarray_interop
from ufm.sweeps import grid

T_SAVE = np.geomspace(1e-2, 1e3, 12)


@pytest.fixture(scope="module")
def coupled_trajectory():
    problem = ufm.settings.factorial((3, 3))
    model = ufm.UFM(problem, lambda_W=1e-3, lambda_H=2e-3, coupling=problem.coupling("attribute", 1.0))
    return ufm.solve(model, model.init(6, seed=1), T_SAVE, save="all")


@pytest.fixture(scope="module")
def training_trajectory():
    # discrete training: steps beside t, a bias, a piecewise coupling Θ(t)
    problem = ufm.settings.hierarchy(2, 2)
    theta = problem.coupling("attribute", 0.5)
    coupling = ufm.PiecewiseCoupling([0.0, 5.0], [np.eye(problem.N), theta])
    model = ufm.UFM(problem, lambda_W=1e-3, lambda_H=1e-3, bias=True, coupling=coupling)
    return ufm.train(model, model.init(5, seed=2), 40, 0.5, optimizer="gd", save="all")


@pytest.fixture(scope="module")
def product_sweep():
    configs = grid({"lambda": [1e-2, 1e-3], "beta": [0.0, 1.0], "seed": [0, 1]},
                   base={"setting": "factorial", "levels": [2, 2], "d": 8, "scale": 1e-3})
    return ufm.sweep(configs, np.geomspace(1e-2, 1e3, 10), threads=1)


ARRAYS = ("t", "steps", "loss", "data_loss", "W", "H", "b", "gram_W", "gram_H", "logits")


def _assert_same_trajectory(a, b):
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), name   # bit for bit, not approximately
    assert a.info == b.info
    pa, pb = a.problem.to_dict(), b.problem.to_dict()
    assert pa.keys() == pb.keys()
    for key in pa:
        if isinstance(pa[key], np.ndarray):
            assert np.array_equal(pa[key], pb[key]), key
        else:
            assert pa[key] == pb[key], key
    ma, mb = a.model.params(), b.model.params()
    ca, cb = ma.pop("coupling"), mb.pop("coupling")
    assert ma == mb
    if isinstance(ca, ufm.PiecewiseCoupling):
        assert np.array_equal(ca.times, cb.times) and np.array_equal(ca.kernels, cb.kernels)
    else:
        assert np.array_equal(ca, cb)


def test_trajectory_dataset_has_labelled_dimensions_and_parameters(coupled_trajectory):
    tr = coupled_trajectory
    ds = tr.to_xarray()
    assert ds["gram_H"].dims == ("time", "context", "context_2")
    assert ds["W"].dims == ("time", "class", "width") and ds["H"].dims == ("time", "width", "context")
    assert ds["logits"].dims == ("time", "class", "context")
    assert ds.sizes["time"] == 12 and ds.sizes["context"] == 9 and ds.sizes["class"] == 9 and ds.sizes["width"] == 6
    assert np.array_equal(ds["time"].values, T_SAVE)
    assert np.array_equal(ds["label"].values, tr.problem.labels)
    assert list(ds["relation"].values) == ["identity", "agree on none", "agree on 0", "agree on 1"]
    assert ds.attrs["model_lambda_H"] == 2e-3 and ds.attrs["model_kind"] == "coupled"
    assert json.loads(ds.attrs["ufm_model"])["lambda_W"] == 1e-3
    assert "W is K×d" in ds.attrs["ufm_conventions"]
    # labelled selection gives the saved array
    assert np.array_equal(ds["gram_H"].sel(context=2, context_2=5).values, tr.gram_H[:, 2, 5])


@pytest.mark.parametrize("which", ["coupled_trajectory", "training_trajectory"])
def test_trajectory_round_trip_through_netcdf_is_bit_exact(which, request, tmp_path):
    tr = request.getfixturevalue(which)
    ds = tr.to_xarray()
    path = tr.to_netcdf(tmp_path / "traj.nc")
    back = xr.load_dataset(path)
    assert back.attrs == ds.attrs
    assert set(back.variables) == set(ds.variables)
    for name in ds.variables:
        assert np.array_equal(back[name].values, ds[name].values), name
    again = ufm.Trajectory.from_xarray(back)
    _assert_same_trajectory(tr, again)
    _assert_same_trajectory(tr, ufm.Trajectory.from_xarray(path))   # a path works too
    # the rebuilt problem and model compute the same metrics
    assert np.array_equal(again.metric("semantic_gap"), tr.metric("semantic_gap"))


def test_trajectory_round_trip_through_zarr(coupled_trajectory, tmp_path):
    store = coupled_trajectory.to_zarr(tmp_path / "traj.zarr")
    _assert_same_trajectory(coupled_trajectory, ufm.Trajectory.from_xarray(store))


def test_from_xarray_refuses_what_is_not_a_trajectory(coupled_trajectory):
    ds = coupled_trajectory.to_xarray()
    with pytest.raises(ValueError, match="ds: not a ufm trajectory"):
        ufm.Trajectory.from_xarray(ds.drop_attrs())
    # a Dataset keeps dimension sizes consistent; what can go wrong is the dimensions' order
    with pytest.raises(ValueError, match=r"variable 'gram_H' has dimensions \('context', 'time', 'context_2'\)"):
        ufm.Trajectory.from_xarray(ds.assign(gram_H=ds["gram_H"].transpose("context", "time", "context_2")))
    with pytest.raises(ValueError, match="ds: the stored model is invalid"):
        ufm.Trajectory.from_xarray(ds.assign_attrs(ufm_model=json.dumps({"lambda_W": -1.0})))
    with pytest.raises(TypeError, match="ds: expected an xarray.Dataset or a path"):
        ufm.Trajectory.from_xarray(42)


def test_sweep_table_as_dataframe(product_sweep):
    df = product_sweep.to_dataframe()
    assert list(df.columns) == product_sweep.columns()
    assert len(df) == len(product_sweep) == 8
    for i, row in enumerate(product_sweep.rows):
        for name in ("lambda_W", "beta", "seed", "gap_peak", "t_collapse", "collapsed", "hash"):
            assert df[name].iloc[i] == row[name] or (np.isnan(row[name]) and np.isnan(df[name].iloc[i]))
    assert df["collapsed"].dtype == bool and df["seed"].dtype == np.int64


def test_sweep_over_a_full_product_unstacks_into_labelled_dimensions(product_sweep, tmp_path):
    ds = product_sweep.to_xarray()
    assert dict(ds.sizes) == {"beta": 2, "lambda": 2, "seed": 2}
    assert ds["lambda_W"].dims == ("lambda",)       # follows the lambda shorthand, 1-D
    assert ds["d"].values == 8 and ds["setting"].values == "factorial"   # constants are scalar coordinates
    for row in product_sweep.rows:
        cell = ds.sel(beta=row["beta"], **{"lambda": row["lambda_W"]}, seed=row["seed"])
        assert cell["hash"].values == row["hash"]
        assert cell["gap_peak"].values == row["gap_peak"]
    flat = product_sweep.to_xarray(dims=None)
    assert dict(flat.sizes) == {"config": 8}
    assert np.array_equal(flat["t_collapse"].values, product_sweep.column("t_collapse"), equal_nan=True)
    back = xr.load_dataset(product_sweep.to_netcdf(tmp_path / "sweep.nc"))
    assert np.array_equal(back["gap_peak"].values, ds["gap_peak"].values, equal_nan=True)
    assert back["collapsed"].dtype == bool and back.attrs == ds.attrs


def test_sweep_that_is_not_a_full_product_keeps_one_config_dimension(product_sweep):
    partial = ufm.SweepResult(product_sweep.rows[:7], [None] * 7)
    assert dict(partial.to_xarray().sizes) == {"config": 7}
    assert dict(ufm.SweepResult([], []).to_xarray().sizes) == {"config": 0}
    with pytest.raises(ValueError, match=r"do not form a full product .*7 configurations, 7 distinct combinations, "
                                         r"a full product has 8\)"):
        partial.to_xarray(dims=["lambda", "beta", "seed"])
    with pytest.raises(ValueError, match=r"dims: \['beta'\] do not form .*2 distinct combinations.*; 5 repeated"):
        partial.to_xarray(dims=["beta"])
    with pytest.raises(ValueError, match="dims: 'd' is not a varying parameter"):
        product_sweep.to_xarray(dims=["d"])


@pytest.mark.parametrize("missing, call, extra", [
    (["xarray"], lambda tr, sw, p: tr.to_xarray(), "xarray"),
    (["xarray"], lambda tr, sw, p: sw.to_xarray(), "xarray"),
    (["pandas"], lambda tr, sw, p: sw.to_dataframe(), "xarray"),
    (["h5netcdf", "netCDF4"], lambda tr, sw, p: tr.to_netcdf(p / "x.nc"), "netcdf"),
    (["zarr"], lambda tr, sw, p: tr.to_zarr(p / "x.zarr"), "zarr"),
])
def test_missing_optional_package_names_the_extra(missing, call, extra, coupled_trajectory, product_sweep,
                                                  tmp_path, monkeypatch):
    for module in missing:
        monkeypatch.setitem(sys.modules, module, None)   # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=rf"'{missing[0]}'.*pip install \"ufm\[{extra}\]\""):
        call(coupled_trajectory, product_sweep, tmp_path)
    assert not list(tmp_path.iterdir())   # nothing half-written


def test_writers_refuse_other_objects(tmp_path):
    with pytest.raises(TypeError, match="obj: expected a ufm.Trajectory"):
        xarray_interop.to_netcdf([1, 2], tmp_path / "x.nc")
    with pytest.raises(TypeError, match="path: expected a file path"):
        xarray_interop.to_netcdf(xr.Dataset(), 3)
