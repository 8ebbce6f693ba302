"""Tests of the Python side of the performance report.

    /usr/bin/python3 -m pytest bench/test_report.py
"""
import argparse
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy_peer  # noqa: E402
import report  # noqa: E402

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def fake_inputs():
    """Small hand-made JSON of the five program runs, per their contracts.

    numpy with the BLAS variables unset is faster on W1 and slower on W2; sgemm unset is faster.
    """
    core = {"sgemm_gflops": 100.0, "openblas_coretype": "Haswell",
            "openblas_config": "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Haswell "
                               "MAX_THREADS=64",
            "workloads": [
                {"name": "W1", "streams": 2, "n": 8, "d": 4, "mode": "blas-threads",
                 "seconds_per_batch": 0.02, "gflops": 60.0, "ratio_to_sgemm": 0.6},
                {"name": "W1", "streams": 2, "n": 8, "d": 4, "mode": "layer-pool",
                 "seconds_per_batch": 0.01, "gflops": 85.0, "ratio_to_sgemm": 0.85},
                {"name": "W2", "streams": 2, "n": 8, "d": 4, "mode": "layer-pool",
                 "seconds_per_batch": 0.1, "gflops": 50.0, "ratio_to_sgemm": 0.5}]}
    sgemm_unset = {"sgemm_gflops": 120.0, "openblas_coretype": "",
                   "openblas_config": "OpenBLAS 0.3.21 DYNAMIC_ARCH Zen MAX_THREADS=64",
                   "workloads": []}
    matrix = [[1.0, 0.25], [0.25, 1.0]]
    service = {
        "quick": False, "machine": {"cpus": 2},
        "transport": [{"workload": "W1", "message_bytes": 1000, "messages": 10, "seconds": 1,
                       "mb_per_s": 1000.0, "messages_per_s": 10}],
        "end_to_end": [
            {"workload": "W1", "mode": "activations", "batches": 100, "seconds": 1,
             "batches_per_s": 90.0, "mb_per_s": 850.0, "submit_us_p50": 50.0,
             "submit_us_p99": 200.0, "submit_us_max": 400.0,
             "paced_interval_ms": 12.0, "paced_submit_us_p50": 50.0,
             "paced_submit_us_p99": 200.0, "paced_submit_us_max": 400.0,
             "paced_submit_cpu_us_p50": 25.0, "paced_submit_cpu_us_p99": 100.0,
             "paced_control_us_p50": 20.0, "paced_control_us_p99": 150.0},
            {"workload": "W1", "mode": "gram_reduction", "batches": 100, "seconds": 1,
             "batches_per_s": 70.0, "mb_per_s": 700.0, "submit_us_p50": 10.0,
             "submit_us_p99": 20.0, "submit_us_max": 30.0,
             "paced_interval_ms": 14.0, "paced_submit_us_p50": 10.0,
             "paced_submit_us_p99": 20.0, "paced_submit_us_max": 30.0}],
        "final_matrix": {"workload": "W1", "streams": ["a/l0", "a/l1"],
                         "values": [[v + 5e-7 for v in r] for r in matrix], "batches": 100},
        "memory": {"workload": "W2", "rss_mb_start": 40.0,
                   "checkpoints": [{"batches": 1000, "rss_mb": 100.0, "vm_hwm_mb": 110.0,
                                    "idle_rss_mb": 60.0, "idle_s": 3.0},
                                   {"batches": 10000, "rss_mb": 130.0, "vm_hwm_mb": 140.0,
                                    "idle_rss_mb": 70.0, "idle_s": 3.0}],
                   "session_state_bytes_256_streams": 2e6},
        "queries": {"streams": 256, "entries": 65536, "queries": 100, "p50_ms": 2.0,
                    "p99_ms": 8.0, "max_ms": 9.0, "ingest_batches_during": 10}}
    peer = {"numpy_version": "1.24.2",
            "blas": {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "512",
                     "threadpoolctl": {"architecture": "Haswell", "num_threads": 2}},
            "workloads": [{"name": "W1", "batches": 50, "seconds": 1.0, "batches_per_s": 80.0,
                           "batch_ms_p50": 12.5, "batch_ms_p99": 14.0, "gflops": 40.0},
                          {"name": "W2", "batches": 50, "seconds": 1.0, "batches_per_s": 9.0,
                           "batch_ms_p50": 1000 / 9, "batch_ms_p99": 120.0, "gflops": 40.0}],
            "final_matrix": {"workload": "W1", "streams": ["s0", "s1"], "values": matrix}}
    peer_unset = {"numpy_version": "1.24.2",
                  "blas": {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None,
                           "threadpoolctl": {"architecture": "Cooperlake", "num_threads": 2}},
                  "workloads": [{"name": "W1", "batches": 60, "seconds": 0.6,
                                 "batches_per_s": 100.0, "batch_ms_p50": 10.0,
                                 "batch_ms_p99": 11.0, "gflops": 50.0},
                                {"name": "W2", "batches": 40, "seconds": 5.0,
                                 "batches_per_s": 8.0, "batch_ms_p50": 125.0,
                                 "batch_ms_p99": 130.0, "gflops": 35.0}],
                  "final_matrix": {"workload": "W1", "streams": ["s0", "s1"],
                                   "values": copy.deepcopy(matrix)}}
    return core, sgemm_unset, service, peer, peer_unset


def find_row(rep, section, item):
    """The row of section number `section` whose item is `item`."""
    for s in rep["sections"]:
        if s["number"] == section:
            for r in s["rows"]:
                if r["item"] == item:
                    return r
    raise KeyError(f"({section}) {item}")


def test_ratios_and_targets():
    rep = report.build_report(*fake_inputs())
    r = find_row(rep, 1, "sgemm, OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset")
    assert abs(r["ratio"] - 1.2) < 1e-12 and "target" not in r
    assert "kernel Zen" in r["note"]
    assert "kernel Haswell" in find_row(rep, 1, "sgemm, OPENBLAS_CORETYPE=Haswell")["note"]
    # The higher sgemm (unset, 120) is the ceiling of (2); ÷ sgemm as set for information.
    assert rep["sgemm_ceiling"] == {"gflops": 120.0, "which": "unset"}
    r = find_row(rep, 2, "W1 layer-pool")  # 85 / 120
    assert abs(r["ratio"] - 85 / 120) < 1e-12 and r["pass"] is False
    assert r["baseline"] == 120.0 and r["baseline_what"] == "sgemm unset"
    assert abs(r["ratio_to_sgemm_as_set"] - 0.85) < 1e-12 and "÷ sgemm as set 0.85" in r["note"]
    assert "target" not in find_row(rep, 2, "W1 blas-threads")  # informational only
    assert find_row(rep, 2, "W2 layer-pool")["pass"] is False
    r = find_row(rep, 4, "W1 activations")
    assert abs(r["ratio"] - 0.85) < 1e-12 and r["pass"] is True
    assert find_row(rep, 4, "W1 gram_reduction")["pass"] is False  # 0.7 < 0.8
    # Both numpy runs are shown, with their kernels; not judged.
    r = find_row(rep, 5, "W1 numpy, as set")
    assert r["value"] == 80.0 and "pass" not in r and "kernel Haswell" in r["note"]
    r = find_row(rep, 5, "W1 numpy, unset")
    assert abs(r["ratio"] - 1.25) < 1e-12 and "pass" not in r and "kernel Cooperlake" in r["note"]
    # ckad is judged against the faster numpy of each workload: W1 unset, W2 as set.
    r = find_row(rep, 5, "W1 core (layer-pool)")  # 100 batches/s vs 1 / 10 ms
    assert abs(r["ratio"] - 1.0) < 1e-12 and r["pass"] is False
    assert r["baseline_what"] == "numpy unset (1/p50)"
    r = find_row(rep, 5, "W2 core (layer-pool)")  # 10 vs 9 (as set; unset is 8): 1.11 < 1.2
    assert abs(r["ratio"] - 10 / 9) < 1e-12 and r["pass"] is False
    assert r["baseline_what"] == "numpy as set (1/p50)"
    r = find_row(rep, 5, "W1 end to end activations")  # 90 / 100
    assert abs(r["ratio"] - 0.9) < 1e-12 and r["pass"] is True
    assert r["baseline_what"] == "numpy unset"
    r = find_row(rep, 6, "W1 activations Submit p50")  # 50 µs / 10 ms (numpy unset) = 0.5 %
    assert abs(r["ratio"] - 0.005) < 1e-12 and r["pass"] is True
    assert r["baseline_what"] == "numpy unset p50"
    assert find_row(rep, 6, "W1 activations Submit p99")["pass"] is False  # 2 %
    # The caller's CPU time is shown beside it, not judged; absent where not measured.
    r = find_row(rep, 6, "W1 activations Submit p99, caller's CPU time")  # 100 µs / 10 ms
    assert abs(r["ratio"] - 0.01) < 1e-12 and "pass" not in r
    with pytest.raises(KeyError):
        find_row(rep, 6, "W1 gram_reduction Submit p99, caller's CPU time")
    # So is the fixed-work control, with its p50 in the note.
    r = find_row(rep, 6, "W1 activations fixed-work control p99")  # 150 µs / 10 ms
    assert abs(r["ratio"] - 0.015) < 1e-12 and "pass" not in r and "p50 20 µs" in r["note"]
    with pytest.raises(KeyError):
        find_row(rep, 6, "W1 gram_reduction fixed-work control p99")
    r = find_row(rep, 7, "growth 1000 → 10000 batches, right after the flush")
    assert r["value"] == 30.0 and "pass" not in r  # shown, not judged
    r = find_row(rep, 7, "growth 1000 → 10000 batches, idle (flat?)")
    assert r["value"] == 10.0 and r["pass"] is True
    assert find_row(rep, 8, "GetSimilarity p99")["pass"] is True
    check = rep["final_matrix_check"]
    assert abs(check["max_abs_diff"] - 5e-7) < 1e-12 and not rep["errors"]
    assert abs(rep["final_matrix_check_unset"]["max_abs_diff"] - 5e-7) < 1e-12
    r = find_row(rep, 5, "final W1 CKA matrix, max |ckad − numpy unset|")
    assert r["pass"] is True and r["error_if_missed"] is True
    text = report.render_text(rep)
    assert "(8) GetSimilarity latency" in text and "MISS" in text
    assert "kernel as set Haswell, unset Cooperlake" in text


def test_cpu_limit_of_end_to_end():
    core, sgemm_unset, service, peer, peer_unset = fake_inputs()
    # No CPU figures: no bound rows.
    rep = report.build_report(core, sgemm_unset, service, peer, peer_unset)
    assert not any("limit" in r["item"] for s in rep["sections"] for r in s["rows"])
    # 2 cores; moving a W1 batch takes 5 ms of CPU, computing it 15 ms: at most 2 / 0.02 =
    # 100 batches/s, i.e. 0.1 MB/s of 1000-byte messages, ÷ transport 1000 MB/s.
    core["cores"] = 2
    core["workloads"][1]["cpu_seconds_per_batch"] = 0.015  # W1 layer-pool
    core["workloads"][0]["cpu_seconds_per_batch"] = 1.0  # blas-threads: not the one used
    service["transport"][0]["cpu_seconds_per_message"] = 0.005
    assert abs(report.cpu_limit(core, service, "W1") - 100.0) < 1e-9
    assert report.cpu_limit(core, service, "W2") is None  # no transport run of W2
    rep = report.build_report(core, sgemm_unset, service, peer, peer_unset)
    r = find_row(rep, 4, "W1 limit of 2 cores (est.)")
    assert abs(r["value"] - 0.1) < 1e-12 and abs(r["ratio"] - 1e-4) < 1e-12
    assert "target" not in r and "100.00 batches/s" in r["note"]
    r = find_row(rep, 5, "W1 end to end, limit of 2 cores (est.)")  # ÷ the faster numpy, 100
    assert abs(r["value"] - 100.0) < 1e-9 and abs(r["ratio"] - 1.0) < 1e-9
    assert r["baseline_what"] == "numpy unset" and "target" not in r


def test_higher_sgemm_is_the_ceiling():
    core, sgemm_unset, service, peer, peer_unset = fake_inputs()
    sgemm_unset["sgemm_gflops"] = 90.0  # unset slower: the ceiling is sgemm as set
    rep = report.build_report(core, sgemm_unset, service, peer, peer_unset)
    assert rep["sgemm_ceiling"] == {"gflops": 100.0, "which": "as set"}
    r = find_row(rep, 2, "W1 layer-pool")
    assert abs(r["ratio"] - 0.85) < 1e-12 and r["pass"] is True
    assert r["baseline_what"] == "sgemm as set"
    # Without the unset run the ceiling is the only sgemm there is.
    rep = report.build_report(core, {}, service, peer, peer_unset)
    assert rep["sgemm_ceiling"] == {"gflops": 100.0, "which": "as set"}
    assert find_row(rep, 2, "W1 layer-pool")["pass"] is True


def test_faster_numpy_is_the_baseline():
    core, sgemm_unset, service, peer, peer_unset = fake_inputs()
    entry, which = report.faster_numpy(peer, peer_unset, "W1")
    assert which == "unset" and entry["batches_per_s"] == 100.0
    entry, which = report.faster_numpy(peer, peer_unset, "W2")
    assert which == "as set" and entry["batches_per_s"] == 9.0
    assert report.faster_numpy(peer, {}, "W1")[1] == "as set"
    assert report.faster_numpy({}, peer_unset, "W1")[1] == "unset"
    assert report.faster_numpy(peer, peer_unset, "W9") == (None, None)
    # Without the unset run, everything is judged against numpy as set, as before.
    rep = report.build_report(core, sgemm_unset, service, peer, None)
    r = find_row(rep, 5, "W1 core (layer-pool)")  # 100 batches/s vs 1 / 12.5 ms
    assert abs(r["ratio"] - 1.25) < 1e-12 and r["pass"] is True
    assert find_row(rep, 5, "W1 numpy, unset")["value"] is None
    assert rep["final_matrix_check_unset"] is None
    with pytest.raises(KeyError):
        find_row(rep, 5, "final W1 CKA matrix, max |ckad − numpy unset|")


def test_unset_matrix_mismatch_is_an_error():
    core, sgemm_unset, service, peer, peer_unset = fake_inputs()
    peer_unset["final_matrix"]["values"][0][1] += 1e-5
    rep = report.build_report(core, sgemm_unset, service, peer, peer_unset)
    assert find_row(rep, 5, "final W1 CKA matrix, max |ckad − numpy|")["pass"] is True
    r = find_row(rep, 5, "final W1 CKA matrix, max |ckad − numpy unset|")
    assert r["pass"] is False and report.fmt_result(r) == "ERROR"
    (error,) = rep["errors"]
    assert "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset" in error
    # An unset run whose matrix is of another workload cannot be compared: an error too.
    peer_unset["final_matrix"]["workload"] = "W2"
    rep = report.build_report(core, sgemm_unset, service, peer, peer_unset)
    assert len(rep["errors"]) == 1 and "unset" in rep["errors"][0]


def test_kernel_without_threadpoolctl():
    core, sgemm_unset, service, peer, peer_unset = fake_inputs()
    peer["blas"] = {"threadpoolctl": None, "corename": "Haswell"}  # falls back to OpenBLAS's
    peer_unset["blas"] = {"threadpoolctl": None}
    rep = report.build_report(core, sgemm_unset, service, peer, peer_unset)
    assert "kernel Haswell" in find_row(rep, 5, "W1 numpy, as set")["note"]
    assert "kernel ?" in find_row(rep, 5, "W1 numpy, unset")["note"]
    assert "kernel as set Haswell, unset ?" in report.render_text(rep)


def test_unset_steps_remove_both_variables(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
    monkeypatch.setenv("CKAD_REPORT_TEST_KEPT", "1")
    args = argparse.Namespace(build="B", quick=True, numpy_seconds=0.5)
    files = {k: f"{k}.json" for k in report.INPUT_KEYS}
    steps = {key: (cmd, env) for key, _, cmd, env in report.benchmark_steps(args, "D", files)}
    assert set(steps) == set(report.INPUT_KEYS)
    for key in ("sgemm_unset", "numpy_unset"):
        cmd, env = steps[key]
        assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env
        assert env["CKAD_REPORT_TEST_KEPT"] == "1"  # everything else is inherited
        assert report.command_text(cmd, env).startswith(
            "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ")
        assert f"{key}.json" in cmd
    for key in ("core", "service", "numpy"):
        cmd, env = steps[key]
        assert env is None and not report.command_text(cmd, env).startswith("env")
    assert steps["numpy"][0][:-1] == steps["numpy_unset"][0][:-1]  # the same run but the file


def test_missing_sections_are_not_measured():
    rep = report.build_report({}, None, {"quick": True, "transport": "garbage"}, {})
    assert rep["summary"]["pass"] == 0 and rep["summary"]["miss"] == 0
    assert rep["summary"]["not_measured"] > 0
    assert not rep["errors"]
    assert "not measured" in report.render_text(rep)


def test_final_matrix_streams_matched_by_number():
    peer = {"workload": "W1", "values": [[1, 0.1, 0.2], [0.1, 1, 0.3], [0.2, 0.3, 1]]}
    # ckad may list streams in another order (e.g. lexicographic): matched by trailing number.
    ckad = {"workload": "W1", "streams": ["m/l2", "m/l0", "m/l1"],
            "values": [[1, 0.2, 0.3], [0.2, 1, 0.1], [0.3, 0.1, 1]]}
    assert report.compare_final_matrices(ckad, peer)["max_abs_diff"] == 0.0
    ckad["workload"] = "W2"
    assert report.compare_final_matrices(ckad, peer)["error"]


def write_inputs(tmp_path, inputs):
    """The five inputs as JSON files; their paths."""
    paths = []
    for name, data in zip(("core", "sgemm", "service", "numpy", "numpy_unset"), inputs):
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(data))
        paths.append(str(p))
    return paths


def test_from_json_exit_status(tmp_path, capsys):
    inputs = fake_inputs()
    out = tmp_path / "out.json"
    assert report.main(["--from-json", *write_inputs(tmp_path, inputs), "--json",
                        str(out)]) == 0  # missed targets do not fail the run
    merged = json.loads(out.read_text())
    assert merged["raw"]["core"]["sgemm_gflops"] == 100.0
    assert merged["raw"]["numpy_unset"]["workloads"][0]["batches_per_s"] == 100.0
    assert merged["targets"]["core_vs_sgemm"] == {"op": ">=", "limit": 0.8}
    # A final matrix off by more than 1e-6 is an error, against either numpy run.
    bad = copy.deepcopy(inputs)
    bad[4]["final_matrix"]["values"][0][1] += 1e-5
    assert report.main(["--from-json", *write_inputs(tmp_path, bad), "--json", str(out)]) == 1
    assert "ERROR: final W1 CKA matrix of ckad differs from numpy's with" in capsys.readouterr().out
    inputs[2]["final_matrix"]["values"][0][1] += 1e-5
    assert report.main(["--from-json", *write_inputs(tmp_path, inputs), "--json",
                        str(out)]) == 1
    assert "ERROR: final W1 CKA matrix" in capsys.readouterr().out
    # "-" stands for a program not measured.
    assert report.main(["--from-json", "-", "-", "-", "-", "-", "--json", str(out)]) == 0


def test_missing_binary_exits_nonzero(tmp_path):
    proc = subprocess.run([PYTHON, os.path.join(HERE, "report.py"), "--build", str(tmp_path),
                           "--quick", "--json", str(tmp_path / "r.json")],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "cka_core_bench" in proc.stderr


def test_numpy_peer_self_test():
    proc = subprocess.run([PYTHON, os.path.join(HERE, "numpy_peer.py"), "--self-test"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "self-test passed" in proc.stdout


def test_make_batches_quick_and_peer(tmp_path):
    data = tmp_path / "data"
    subprocess.run([PYTHON, os.path.join(HERE, "make_batches.py"), "--out", str(data),
                    "--quick"], check=True)
    workloads = json.loads((data / "workloads.json").read_text())
    assert workloads == [{"name": "Q", "streams": 4, "n": 64, "d": 256}]
    arrays = [np.load(data / "Q" / f"s{i}.npy") for i in range(4)]
    for x in arrays:
        assert x.shape == (64, 256) and x.dtype == np.float32
        assert x.min() == 0.0 and x.max() > 0  # ReLU
    assert not np.array_equal(arrays[0], arrays[1])  # a seed per stream
    # The same data on every run.
    again = tmp_path / "again"
    subprocess.run([PYTHON, os.path.join(HERE, "make_batches.py"), "--out", str(again),
                    "--quick"], check=True)
    assert np.array_equal(np.load(again / "Q" / "s3.npy"), arrays[3])
    # The numpy peer runs on them and reports the contract's fields.
    out = tmp_path / "numpy.json"
    subprocess.run([PYTHON, os.path.join(HERE, "numpy_peer.py"), "--data", str(data),
                    "--json", str(out), "--seconds", "0.05"], check=True)
    result = json.loads(out.read_text())
    (w,) = result["workloads"]
    assert w["name"] == "Q" and w["batches"] >= 3
    for key in ("seconds", "batches_per_s", "batch_ms_p50", "batch_ms_p99", "gflops"):
        assert w[key] > 0
    values = np.array(result["final_matrix"]["values"])
    assert result["final_matrix"]["workload"] == "Q" and values.shape == (4, 4)
    assert np.allclose(np.diag(values), 1.0)
    assert "numpy_version" in result and "blas" in result
    blas = result["blas"]
    assert blas["OPENBLAS_L2_SIZE"] == os.environ.get("OPENBLAS_L2_SIZE")
    assert blas["OPENBLAS_CORETYPE"] == os.environ.get("OPENBLAS_CORETYPE")
    assert "threadpoolctl" in blas
    # Again with the BLAS variables unset, as report.py runs it: recorded as unset.
    subprocess.run([PYTHON, os.path.join(HERE, "numpy_peer.py"), "--data", str(data),
                    "--json", str(out), "--seconds", "0.05"], check=True, env=report.unset_env())
    blas = json.loads(out.read_text())["blas"]
    assert blas["OPENBLAS_CORETYPE"] is None and blas["OPENBLAS_L2_SIZE"] is None


def test_numpy_peer_threadpoolctl():
    pytest.importorskip("threadpoolctl")
    tp = numpy_peer.threadpool_blas()
    assert set(tp) == set(numpy_peer.THREADPOOL_FIELDS)
    if tp["internal_api"] == "openblas":
        assert isinstance(tp["architecture"], str) and tp["architecture"]
        assert isinstance(tp["num_threads"], int) and tp["num_threads"] >= 1


def test_numpy_peer_without_threadpoolctl(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import raises ImportError
    assert numpy_peer.threadpool_blas() is None
    info = numpy_peer.blas_info()
    assert info["threadpoolctl"] is None and "OPENBLAS_L2_SIZE" in info and "loaded" in info
    # The benchmark still runs and writes its JSON.
    data = tmp_path / "data"
    subprocess.run([PYTHON, os.path.join(HERE, "make_batches.py"), "--out", str(data),
                    "--quick"], check=True)
    out = tmp_path / "numpy.json"
    assert numpy_peer.main(["--data", str(data), "--json", str(out), "--seconds", "0.05"]) == 0
    result = json.loads(out.read_text())
    assert result["blas"]["threadpoolctl"] is None and result["workloads"][0]["batches"] >= 3


def test_moment_bench_missing_is_a_failure_and_quick_runs_where_built(tmp_path):
    args = argparse.Namespace(build=str(tmp_path), quick=True, timeout=60)
    figures, _, failure = report.run_moment_bench(args, str(tmp_path))
    assert figures == {} and "cka_moment_bench" in failure
    build = os.environ.get("CKA_BUILD_DIR")
    if not build or not os.path.exists(os.path.join(build, "bench", "cka_moment_bench")):
        return  # the rest needs a build (tests/run_all.sh's report run covers it)
    args.build = build
    figures, text, failure = report.run_moment_bench(args, str(tmp_path))
    assert failure is None, failure
    assert [e["p"] for e in figures["moment_queries"]] == [32, 64]
    assert "regression_r2" in text
