"""python -m cka against a real ckad: `sessions` and `matrix` print what Client returns (the
JSON values bit for bit, null where there is no value), as a subprocess the way a shell runs
it, and an unknown session exits 1 naming the code."""

import json
import os
import subprocess
import sys

import numpy as np

import cka
from conftest import ROOT


def run_cli(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.join(ROOT, "client", "python"), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "cka", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_sessions_and_matrix_print_what_the_client_returns(ckad, client, session_id):
    rng = np.random.default_rng(11)
    client.create_session(session_id, streams=["a/x", "a/y", "b/z"])
    with cka.Streamer(client, session_id, "a") as streamer:
        for b in range(3):
            x = rng.standard_normal((10, 6))
            streamer.submit(b, b, {"x": x, "y": x[:, :3] + rng.standard_normal((10, 3))})
    assert streamer.rejected == []
    expected = client.similarity(session_id, rows=["a/x", "b/z"], cols=["a/x", "a/y"])
    assert np.isnan(expected.values[1]).all()  # b/z has no batch: no value

    listed = run_cli("--address", ckad.address, "sessions", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    [mine] = [s for s in json.loads(listed.stdout) if s["session_id"] == session_id]
    assert mine["batches_applied"] == 3 and sorted(mine["streams"]) == ["a/x", "a/y", "b/z"]
    table = run_cli("--address", ckad.address, "sessions")
    assert any(line.split()[:3] == [session_id, "3", "3"] for line in table.stdout.splitlines())

    shown = run_cli("--address", ckad.address, "matrix", session_id, "--rows", "a/x,b/z",
                    "--cols", "a/x,a/y", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    got = json.loads(shown.stdout)
    assert (got["rows"], got["cols"]) == (expected.rows, expected.cols)
    values = np.array([[np.nan if v is None else v for v in row] for row in got["values"]])
    np.testing.assert_array_equal(values, expected.values)  # NaN where NaN, else bit for bit
    np.testing.assert_array_equal(got["batches"], expected.batches)
    csv = run_cli("--address", ckad.address, "matrix", session_id, "--rows", "a/x,b/z",
                  "--cols", "a/x,a/y", "--format", "csv").stdout.splitlines()
    assert csv[0] == ",a/x,a/y" and csv[2] == "b/z,,"
    assert [float(v) for v in csv[1].split(",")[1:]] == expected.values[0].tolist()
    client.delete_session(session_id)


def test_an_unknown_session_exits_1_naming_the_code(ckad):
    run = run_cli("--address", ckad.address, "matrix", "no-such-session")
    assert run.returncode == 1 and run.stdout == ""
    assert "NOT_FOUND" in run.stderr and "no-such-session" in run.stderr
