"""The comparison family through the Python client: a session whose measures are the kinds of
cka.Measure (CCA R^2, CCA rho-bar, SVCCA, PWCCA, regression R^2, Procrustes), streamed with
cka.Streamer, answers what the independent float64 NumPy oracle of
tests/core/data/measures.json (make_measures.py beside it) says; the kinds round-trip through
GetSession; bad kinds and step ranges raise with the server's code."""

from __future__ import annotations

import json
import os

import grpc
import numpy as np
import pytest

import cka
from conftest import ROOT

#: (kind, the oracle's quantity for entry (x, y), for entry (y, x)); PWCCA's (y, x) is not in it.
KINDS = [("cca_r2", "cca_r2", "cca_r2"), ("cca_mean_rho", "cca_mean_rho", "cca_mean_rho"),
         ("svcca", "svcca", "svcca"), ("pwcca", "pwcca", None),
         ("regression_r2", "regression_xy", "regression_yx"),
         ("procrustes", "procrustes", "procrustes")]


def oracle_case(name: str) -> dict:
    with open(os.path.join(ROOT, "tests", "core", "data", "measures.json")) as f:
        return next(c for c in json.load(f)["cases"] if c["name"] == name)


@pytest.mark.parametrize("case_name", ["full_rank", "duplicated_columns", "constant_x"])
def test_every_kind_equals_the_numpy_oracle(client, session_id, case_name):
    case = oracle_case(case_name)
    measures = [cka.Measure.of_kind(kind, kind) for kind, _, _ in KINDS]
    created = client.create_session(session_id, measures=measures, streams=["m/x", "m/y"])
    assert [m.kind for m in created.measures] == [kind for kind, _, _ in KINDS]
    assert all(m.estimator == "exact" for m in created.measures)
    x = np.array(case["x"]).reshape(case["n"], case["dx"])
    y = np.array(case["y"]).reshape(case["n"], case["dy"])
    half = case["n"] // 2
    with cka.Streamer(client, session_id, "m") as streamer:
        for b, rows in enumerate((slice(0, half), slice(half, None))):
            streamer.submit(b, 0, {"x": x[rows], "y": y[rows]})
    assert streamer.rejected == []
    for kind, xy, yx in KINDS:
        m = client.similarity(session_id, measure=kind)
        assert m.values.shape == (2, 2) and (m.batches == 2).all()
        for (i, j), quantity in (((0, 1), xy), ((1, 0), yx)):
            if quantity is None:
                continue
            if quantity in case["errors"]:
                assert np.isnan(m.values[i, j]), (kind, i, j)
                assert "no variance" in m.note, m.note
            else:
                # 1e-6 relative: ckad's contract against a float64 computation (core/MATH.md).
                np.testing.assert_allclose(m.values[i, j], case["expected"][quantity],
                                           rtol=1e-6, err_msg=f"{case_name} {kind} ({i}, {j})")


def test_specs_and_errors(client, session_id):
    assert cka.Measure.parse("reg:regression_r2") == cka.Measure(
        "reg", "linear", "exact", 0.0, "regression_r2")
    with pytest.raises(cka.CkaError) as error:
        cka.Measure("m", kind="cca")
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT and "'cca'" in error.value.message
    with pytest.raises(cka.CkaError) as error:
        client.create_session(session_id, measures=["cca:cca_r2"])  # no declared streams
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "config.streams" in error.value.message
    with pytest.raises(cka.CkaError) as error:
        client.create_session(session_id, streams=["m/x"],
                              measures=[cka.Measure("c", "linear", "unbiased", 0.0, "svcca")])
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "estimator exact" in error.value.message
    client.create_session(session_id, streams=["m/x", "m/y"], step_bucket=5,
                          measures=["p:procrustes"])
    with pytest.raises(cka.CkaError) as error:
        client.similarity(session_id, step_min=0, step_max=4)
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "kept for all time only" in error.value.message
