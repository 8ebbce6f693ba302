"""bench/layer_matching.py, the paper's layer-matching table through ckad: its --quick run against
a real ckad (three networks in three spawned processes, one session) prints a row for every
measure and exits 0 only when ckad's CKA matrices equal its NumPy float64 ones within 1e-6; its
NumPy comparison family equals the core tests' independent oracle (tests/core/data/measures.json,
made by make_measures.py beside it); its matching accuracy and block finder behave on constructed
matrices with known answers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, require

sys.path.insert(0, os.path.join(ROOT, "bench"))
import layer_matching  # noqa: E402

SCRIPT = os.path.join(ROOT, "bench", "layer_matching.py")


def test_the_quick_run_prints_every_measure_and_ckad_equals_numpy(ckad, client, session_id):
    require("torch")
    require("sklearn")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.join(ROOT, "client", "python"), env.get("PYTHONPATH")) if p)
    run = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--address", ckad.address, "--session", session_id],
        capture_output=True, text=True, timeout=600, env=env)
    print(run.stdout, run.stderr)
    assert run.returncode == 0

    served = 0
    for row in layer_matching.MEASURES:
        line = next((ln for ln in run.stdout.splitlines() if ln.startswith(row.label + "  ")),
                    None)
        assert line is not None, f"no table row for {row.label}"
        cells = line[len(row.label):]
        numbers = re.findall(r"(\d+\.\d) %", cells)
        if "not in ckad yet" in cells or "not a ckad query" in cells:
            assert len(numbers) >= 1, line  # NumPy's accuracy
            continue
        served += 1
        assert len(numbers) >= 2, line  # ckad's and NumPy's accuracy
        assert numbers[0] == numbers[1], line  # ckad's table equals NumPy's
        diff = float(re.search(r"\s(\d\.\de[-+]\d+)\s", cells).group(1))
        # 1e-6: ckad's contract for float32 activations against a float64 computation.
        assert diff <= layer_matching.TOLERANCE, line
    # Every row but RBF CKA over all rows at once: the CKA estimators and the comparison family.
    assert served == len(layer_matching.MEASURES) - 1

    info = client.get_session(session_id)
    assert info.batches_applied == 3 * 2  # three networks, two probe batches each
    assert info.pairs_missed == 0 and info.batches_pending == 0
    for network in ("net00", "net01", "net02", "deep00"):
        assert re.search(rf"^  {network}: largest block \d+ of \d+ layers", run.stdout, re.M)
    client.delete_session(session_id)
    client.delete_session(session_id + "-deep")


def test_the_numpy_comparison_family_equals_the_core_oracle():
    with open(os.path.join(ROOT, "tests", "core", "data", "measures.json")) as f:
        cases = json.load(f)["cases"]
    family = layer_matching.FAMILY
    names = {"regression": "regression_xy"}  # the oracle's names where they differ
    checked = 0
    for case in cases:
        if case["errors"]:
            continue  # streams without variance: not in the layer-matching table
        x = np.array(case["x"]).reshape(case["n"], case["dx"])
        y = np.array(case["y"]).reshape(case["n"], case["dy"])
        bx, by = layer_matching.Basis.of(x), layer_matching.Basis.of(y)
        pair = layer_matching.Pair(bx, by)
        pair.svd  # noqa: B018 (computed first, so that swapped() reuses it)
        fresh = layer_matching.Pair(by, bx)
        expected = dict(case["expected"], **{name: case["expected"][oracle]
                                             for name, oracle in names.items()})
        for p, swapped in ((pair, False), (pair.swapped(), True)):
            for name, f in family.items():
                want = expected[name]
                if swapped:  # the oracle has R^2(Y -> X); the rest: as computed from (Y, X)
                    want = (case["expected"]["regression_yx"] if name == "regression"
                            else f(fresh))
                # 1e-9: two float64 computations of one definition (SVDs of N x d data each).
                np.testing.assert_allclose(f(p), want, rtol=1e-9,
                                           err_msg=f"{case['name']}: {name}, swapped {swapped}")
                checked += 1
    assert checked >= 5 * (len(family) + 1)


def test_the_cka_functions_are_one_on_a_stream_with_itself_and_invariant_to_rotation():
    rng = np.random.default_rng(17)
    print("seed 17")
    x = rng.standard_normal((3, 20, 6)).astype(np.float32)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    rotated = (x.astype(np.float64) @ q).astype(np.float32)
    other = np.tanh(x @ rng.standard_normal((6, 4)).astype(np.float32))
    cache = {}
    for row in layer_matching.MEASURES:
        values = row.matrix([x, rotated, other], cache)
        # 1e-5: the rotated copy was rounded to float32.
        np.testing.assert_allclose(np.diag(values), 1.0, atol=1e-9, err_msg=row.label)
        np.testing.assert_allclose(values[0, 1], 1.0, atol=1e-5, err_msg=row.label)
        assert values[0, 2] < 0.999, row.label


def test_matching_accuracy_counts_the_corresponding_layer():
    # Two networks of three layers; stream a*3 + i.
    same = np.kron(np.ones((2, 2)), np.eye(3)) * 0.5 + 0.25
    assert layer_matching.matching_accuracy(same, 2, 3) == 1.0
    shifted = same.copy()
    shifted[0:3, 3:6] = np.roll(np.eye(3), 1, axis=1) * 0.5 + 0.25  # a's layer i ~ b's i+1
    assert layer_matching.matching_accuracy(shifted, 2, 3) == 0.5  # b -> a still right
    tied = same.copy()  # a's layers equal every layer of b but for rounding: a tie
    tied[0:3, 3:6] = 1.0 + 1e-12 * np.eye(3)
    assert layer_matching.matching_accuracy(tied, 2, 3) == 4 / 6  # the first, layer 0, wins
    missing = same.copy()
    missing[0, 3] = np.nan  # no value never wins: a's layer 0 picks a wrong layer
    assert layer_matching.matching_accuracy(missing, 2, 3) == 5 / 6


@pytest.mark.parametrize("blocks,expected", [
    ([(1, 3), (4, 5)], [(1, 3), (4, 5)]),
    ([], []),
    ([(0, 6)], [(0, 6)]),
])
def test_blocks_finds_the_maximal_runs_above_the_threshold(blocks, expected):
    sim = np.full((7, 7), 0.5)
    for first, last in blocks:
        sim[first:last + 1, first:last + 1] = 0.95
    np.fill_diagonal(sim, 1.0)
    assert layer_matching.blocks(sim, 0.9) == expected


def test_blocks_of_a_chain_overlap_where_not_all_pairs_exceed_the_threshold():
    # Neighbours are similar (0.95), layers two apart are not (0.8): runs of two, overlapping.
    sim = np.full((4, 4), 0.5)
    for i in range(4):
        sim[i, i] = 1.0
        if i + 1 < 4:
            sim[i, i + 1] = sim[i + 1, i] = 0.95
        if i + 2 < 4:
            sim[i, i + 2] = sim[i + 2, i] = 0.8
    assert layer_matching.blocks(sim, 0.9) == [(0, 1), (1, 2), (2, 3)]
