#!/usr/bin/python3
"""The performance report of ckad: one command, every figure next to its baseline.

    report.py --build BUILD_DIR [--quick] [--json OUT] [--keep-data DIR]

It writes the benchmark batches (make_batches.py) into a temporary directory, runs on them
  - BUILD_DIR/bench/cka_core_bench --data DIR --json F1          (core hot path + sgemm),
  - env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE cka_core_bench --sgemm-only --json F2
                                                                 (sgemm, kernel unforced),
  - BUILD_DIR/bench/cka_service_bench --ckad BUILD_DIR/server/ckad --data DIR --json F3,
  - numpy_peer.py --data DIR --json F4                            (the numpy peer),
  - env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE numpy_peer.py --data DIR --json F5
                                                                 (the numpy peer, unforced),
  - torch_bench.py --ckad BUILD_DIR/server/ckad --json F6        (a PyTorch training loop:
                                 ckad streaming vs the in-process peer; skipped without torch),
prints one report (a table per section: figure, baseline, ratio, the issue's target, pass/miss)
and writes all raw figures, ratios, targets and pass/miss flags to --json
(default bench-report.json). A missed target never fails the run; a missing or failing
program does (exit 1, or 2 when a program is missing), and so does a final W1 CKA matrix of ckad
that differs from either numpy run's by more than 1e-6.

    report.py --from-json F1 F2 F3 F4 F5 [--json OUT]

re-renders a report from the five JSON files of an earlier run ("-" for one not measured).
This script itself needs only the standard library; make_batches.py and numpy_peer.py run
under /usr/bin/python3 (numpy).
"""
import argparse
import datetime
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# The issue's targets: (comparison, limit). "flat" memory is our own threshold (see README).
TARGETS = {
    "core_vs_sgemm": (">=", 0.8),        # core GFLOP/s (layer-pool) / sgemm GFLOP/s
    "e2e_vs_transport": (">=", 0.8),     # end-to-end MB/s / transport MB/s
    "core_vs_numpy": (">=", 1.2),        # core batches/s / numpy batches/s
    "e2e_vs_numpy": (">=", 0.8),         # end-to-end batches/s / numpy batches/s
    "submit_vs_numpy": ("<=", 0.01),     # Submit latency / numpy per-batch compute p50
    "memory_growth_mb": ("<=", 16.0),    # RSS growth between the first and last checkpoint
    "query_p99_ms": ("<=", 10.0),        # GetSimilarity p99 for 256 streams
    "final_matrix_max_abs_diff": ("<=", 1e-6),  # ckad vs numpy final matrix: an ERROR if missed
}

# The variables that force OpenBLAS's kernel on these machines; the "unset" runs remove both.
UNSET_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
UNSET_TEXT = "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset"

# The JSON inputs of a report, in the order of --from-json.
INPUT_KEYS = ("core", "sgemm_unset", "service", "numpy", "numpy_unset")

SECTION_TITLES = {
    1: "Compute ceiling: sgemm",
    2: "Core hot path vs sgemm",
    3: "Transport ceiling",
    4: "End to end vs transport",
    5: "ckad vs the numpy peer",
    6: "Submit latency vs numpy per-batch compute",
    7: "Memory",
    8: "GetSimilarity latency",
}


# ---------------------------------------------------------------------------------------------
# Small helpers

def get(obj, *keys):
    """obj[k1][k2]..., or None if any level is missing or of the wrong type."""
    for k in keys:
        if isinstance(obj, dict) and k in obj:
            obj = obj[k]
        elif isinstance(obj, list) and isinstance(k, int) and -len(obj) <= k < len(obj):
            obj = obj[k]
        else:
            return None
    return obj


def num(x):
    """x as a finite float, or None (missing, not a number, NaN or infinite)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def finite(obj):
    """A copy of a JSON value with NaN and infinities replaced by None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def ratio(a, b):
    """a / b, or None when either is missing or b is 0."""
    a, b = num(a), num(b)
    if a is None or b is None or b == 0:
        return None
    return a / b


def meets(value, target_key):
    """True/False against TARGETS[target_key]; None when value is missing."""
    value = num(value)
    if value is None:
        return None
    op, limit = TARGETS[target_key]
    return value >= limit if op == ">=" else value <= limit


def target_text(target_key, percent=False, unit=""):
    """The target as text, e.g. '≥ 0.8', '≤ 1 %' or '≤ 10 ms'."""
    op, limit = TARGETS[target_key]
    sign = "≥" if op == ">=" else "≤"
    if percent:
        return f"{sign} {limit * 100:g} %"
    return f"{sign} {limit:g} {unit}".rstrip()


def by_name(items, key):
    """A list of dicts as {item[key]: item}, skipping malformed entries."""
    out = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and key in item:
            out[item[key]] = item
    return out


def kernel_name(config):
    """The OpenBLAS core named by openblas_get_config() (DYNAMIC_ARCH builds), else the string."""
    if not config:
        return None
    tokens = config.split()
    for i, tok in enumerate(tokens):
        if tok.startswith("MAX_THREADS=") and i > 0 and "DYNAMIC_ARCH" in tokens[:i]:
            return tokens[i - 1]
    return config


def row(item, value=None, unit="", baseline=None, baseline_unit="", baseline_what="",
        ratio_value=None, target=None, percent=False, note="", error=False):
    """One line of a section: a figure, its baseline, the ratio and the target check."""
    r = {"item": item, "value": num(value), "unit": unit,
         "baseline": num(baseline), "baseline_unit": baseline_unit,
         "baseline_what": baseline_what, "ratio": num(ratio_value),
         "ratio_percent": percent, "note": note}
    if target:
        # A row with a baseline is judged on its ratio, one without on its figure.
        checked = ratio_value if baseline_what else value
        r["target_key"] = target
        r["target"] = target_text(target, percent, "" if baseline_what else unit)
        r["pass"] = meets(checked, target)
        r["error_if_missed"] = error
    return r


# ---------------------------------------------------------------------------------------------
# The sections: raw JSON in, rows out

def higher(as_set, unset, key):
    """Of the runs as set and unset (dicts), the one whose `key` is higher: (it, its label).

    The label is "as set" or "unset"; (None, None) when neither has a figure for `key`.
    """
    best, which = None, None
    for what, run in (("as set", as_set), ("unset", unset)):
        v = num(get(run, key))
        if v is not None and (best is None or v > num(get(best, key))):
            best, which = run, what
    return best, which


def sgemm_ceiling(core, sgemm_unset):
    """The machine's compute ceiling: (the higher sgemm GFLOP/s of (1), "as set" or "unset").

    (None, None) when neither was measured.
    """
    run, which = higher(core, sgemm_unset, "sgemm_gflops")
    return num(get(run, "sgemm_gflops")), which


def section_sgemm(core, sgemm_unset):
    """(1) sgemm GFLOP/s with the OpenBLAS variables as set and unset, and the kernel of each."""
    set_g = get(core, "sgemm_gflops")
    unset_g = get(sgemm_unset, "sgemm_gflops")
    ct = get(core, "openblas_coretype")
    ct_text = ct if ct else "(unset)"
    rows = [
        row(f"sgemm, OPENBLAS_CORETYPE={ct_text}", set_g, "GFLOP/s",
            note=f"kernel {kernel_name(get(core, 'openblas_config')) or '?'}"
            if core else ""),
        row(f"sgemm, {UNSET_TEXT}", unset_g, "GFLOP/s", set_g, "GFLOP/s", "as set",
            ratio(unset_g, set_g),
            note=f"kernel {kernel_name(get(sgemm_unset, 'openblas_config')) or '?'}"
            if sgemm_unset else ""),
    ]
    notes = []
    ceiling, which = sgemm_ceiling(core, sgemm_unset)
    if ceiling is not None:
        notes.append(f"the machine's compute ceiling is the higher of the two: "
                     f"{fmt_value(ceiling, 'GFLOP/s')} ({which}); (2) is judged against it")
    for what, src in (("as set", core), ("unset", sgemm_unset)):
        if get(src, "openblas_config"):
            notes.append(f"OpenBLAS ({what}): {get(src, 'openblas_config')}")
    return rows, notes


def core_batches_per_s(w):
    """Batches/s of one cka_core_bench workload entry."""
    spb = num(get(w, "seconds_per_batch"))
    return 1.0 / spb if spb else None


def section_core(core, sgemm_unset):
    """(2) core GFLOP/s per workload and mode / the compute ceiling; target on layer-pool.

    The ceiling is the higher sgemm of (1); the ratio to sgemm as set (the kernel ckad itself
    runs here) is shown in the note and kept as ratio_to_sgemm_as_set, for information.
    """
    as_set = get(core, "sgemm_gflops")
    ceiling, which = sgemm_ceiling(core, sgemm_unset)
    rows = []
    for w in get(core, "workloads") or []:
        mode = get(w, "mode") or "?"
        shape = f"{get(w, 'streams')}×{get(w, 'n')}×{get(w, 'd')}"
        spb = num(get(w, "seconds_per_batch"))
        vs_set = ratio(get(w, "gflops"), as_set)
        note = ", ".join(s for s in (
            f"÷ sgemm as set {vs_set:.2f}" if vs_set is not None else "",
            shape,
            f"{spb * 1e3:.2f} ms/batch" if spb else "",
            f"Gram: {get(w, 'gram_kernel')}" if get(w, "gram_kernel") else "") if s)
        r = row(f"{get(w, 'name')} {mode}", get(w, "gflops"), "GFLOP/s", ceiling, "GFLOP/s",
                f"sgemm {which}" if which else "sgemm", ratio(get(w, "gflops"), ceiling),
                target="core_vs_sgemm" if mode == "layer-pool" else None, note=note)
        r["ratio_to_sgemm_as_set"] = vs_set
        rows.append(r)
    if not rows:
        rows.append(row("core workloads", target="core_vs_sgemm"))
    notes = ["target on mode layer-pool (what ckad does); blas-threads for comparison",
             "ratio ÷ the machine's compute ceiling (the higher sgemm of (1)); "
             "÷ sgemm as set in the notes, for information"]
    return rows, notes


def section_transport(service):
    """(3) transport ceiling MB/s per workload."""
    rows = []
    for t in get(service, "transport") or []:
        mb = num(get(t, "message_bytes"))
        mps = num(get(t, "messages_per_s"))
        note = ", ".join(s for s in (
            f"{mb / 1e6:.2f} MB messages" if mb is not None else "",
            f"{mps:.1f} messages/s" if mps is not None else "",
            f"{get(t, 'messages')} messages" if get(t, "messages") is not None else "",
            f"{num(get(t, 'cpu_seconds_per_message')) * 1e3:.2f} ms CPU/message (both ends)"
            if num(get(t, "cpu_seconds_per_message")) is not None else "") if s)
        rows.append(row(f"{get(t, 'workload')}", get(t, "mb_per_s"), "MB/s", note=note))
    if not rows:
        rows.append(row("transport"))
    return rows, []


def cpu_limit(core, service, name):
    """An estimate of the batches/s end to end can reach on this machine's cores, for `name`.

    Client and ckad share the cores, and each batch needs the CPU that moving its bytes takes
    (the transport run's CPU per message, both processes) plus the CPU that computing it takes
    (the core run's CPU per batch, layer-pool): cores ÷ their sum. Not a strict bound: the
    real client sends from the batch's own buffers and may move a batch for less CPU than the
    raw stream does. None when not measured.
    """
    cores = num(get(core, "cores"))
    move = num(get(by_name(get(service, "transport"), "workload"), name,
                   "cpu_seconds_per_message"))
    compute = None
    for w in get(core, "workloads") or []:
        if get(w, "name") == name and get(w, "mode") == "layer-pool":
            compute = num(get(w, "cpu_seconds_per_batch"))
    if not cores or move is None or compute is None or move + compute <= 0:
        return None
    return cores / (move + compute)


CPU_LIMIT_NOTE = ("limit of the cores (an estimate, not judged): cores ÷ (CPU per message of "
                  "the transport run + CPU per batch of the core run), what end to end reaches "
                  "when client and ckad move a batch as the raw stream does and compute it as "
                  "the core run does, on the same cores")


def section_e2e_transport(core, service):
    """(4) end-to-end MB/s / transport MB/s of the same workload, per mode; the cores' limit."""
    transport = by_name(get(service, "transport"), "workload")
    rows = []
    for e in get(service, "end_to_end") or []:
        w = get(e, "workload")
        base = get(transport, w, "mb_per_s")
        bps = num(get(e, "batches_per_s"))
        rows.append(row(f"{w} {get(e, 'mode')}", get(e, "mb_per_s"), "MB/s", base, "MB/s",
                        "transport", ratio(get(e, "mb_per_s"), base), "e2e_vs_transport",
                        note=f"{bps:.2f} batches/s" if bps is not None else ""))
    limited = False
    for w in transport:
        limit = cpu_limit(core, service, w)
        if limit is None:
            continue
        mb = limit * num(get(transport, w, "message_bytes")) / 1e6
        base = get(transport, w, "mb_per_s")
        rows.append(row(f"{w} limit of {get(core, 'cores')} cores (est.)", mb, "MB/s", base,
                        "MB/s", "transport", ratio(mb, base), note=f"{limit:.2f} batches/s"))
        limited = True
    if not rows:
        rows.append(row("end to end", target="e2e_vs_transport"))
    return rows, [CPU_LIMIT_NOTE] if limited else []


def blas_kernel(blas):
    """The kernel named in a numpy_peer.py "blas" entry, or None.

    threadpoolctl's "architecture"; without threadpoolctl, the core name OpenBLAS gave.
    """
    return get(blas, "threadpoolctl", "architecture") or get(blas, "corename")


def faster_numpy(peer, peer_unset, name):
    """The faster numpy run of workload `name` (more batches/s): (its entry, "as set"/"unset").

    (None, None) when neither run measured the workload.
    """
    return higher(get(by_name(get(peer, "workloads"), "name"), name),
                  get(by_name(get(peer_unset, "workloads"), "name"), name), "batches_per_s")


def numpy_note(peer, entry):
    """The note of a numpy row: the kernel of that run and its per-batch p50."""
    if not entry:
        return ""
    p50 = num(get(entry, "batch_ms_p50"))
    return ", ".join(s for s in (f"kernel {blas_kernel(get(peer, 'blas')) or '?'}",
                                 f"p50 {p50:.2f} ms" if p50 is not None else "") if s)


def numpy_rows(peer, peer_unset):
    """(5) numpy's batches/s per workload, as set and unset, with the kernel of each."""
    set_w = by_name(get(peer, "workloads"), "name")
    unset_w = by_name(get(peer_unset, "workloads"), "name")
    rows = []
    for name in list(set_w) + [n for n in unset_w if n not in set_w]:
        a = get(set_w, name, "batches_per_s")
        b = get(unset_w, name, "batches_per_s")
        rows.append(row(f"{name} numpy, as set", a, "batches/s",
                        note=numpy_note(peer, get(set_w, name))))
        rows.append(row(f"{name} numpy, unset", b, "batches/s", a, "batches/s", "as set",
                        ratio(b, a), note=numpy_note(peer_unset, get(unset_w, name))))
    return rows


def matrix_row(check, what):
    """The final-matrix row of one check: max |ckad − `what`| (an error if above 1e-6)."""
    label = f"final {check['workload']} CKA matrix" if check["workload"] else "final CKA matrix"
    return row(f"{label}, max |ckad − {what}|", check["max_abs_diff"],
               target="final_matrix_max_abs_diff", note=check["note"], error=True)


def section_numpy(core, service, peer, peer_unset):
    """(5) numpy's two runs; core and end-to-end batches/s / the faster numpy; matrix checks.

    Returns (rows, notes, check of the as-set run, check of the unset run or None when that
    run was not measured).
    """
    rows = numpy_rows(peer, peer_unset)
    judged = 0
    for w in get(core, "workloads") or []:
        if get(w, "mode") != "layer-pool":
            continue
        name = get(w, "name")
        # Both per-batch medians (the core bench reports medians); end to end below is
        # throughput against numpy's throughput.
        entry, which = faster_numpy(peer, peer_unset, name)
        p50_ms = num(get(entry, "batch_ms_p50"))
        base = 1e3 / p50_ms if p50_ms else None
        rows.append(row(f"{name} core (layer-pool)", core_batches_per_s(w), "batches/s", base,
                        "batches/s", f"numpy {which} (1/p50)" if which else "numpy (1/p50)",
                        ratio(core_batches_per_s(w), base), "core_vs_numpy"))
        judged += 1
    for e in get(service, "end_to_end") or []:
        name = get(e, "workload")
        entry, which = faster_numpy(peer, peer_unset, name)
        base = get(entry, "batches_per_s")
        rows.append(row(f"{name} end to end {get(e, 'mode')}", get(e, "batches_per_s"),
                        "batches/s", base, "batches/s", f"numpy {which}" if which else "numpy",
                        ratio(get(e, "batches_per_s"), base), "e2e_vs_numpy"))
        judged += 1
    limited = False
    for name in by_name(get(service, "transport"), "workload"):
        limit = cpu_limit(core, service, name)
        entry, which = faster_numpy(peer, peer_unset, name)
        base = get(entry, "batches_per_s")
        if limit is None or base is None:
            continue
        rows.append(row(f"{name} end to end, limit of {get(core, 'cores')} cores (est.)", limit,
                        "batches/s", base, "batches/s", f"numpy {which}", ratio(limit, base)))
        limited = True
    if not judged:
        rows.append(row("batches/s vs numpy", target="core_vs_numpy"))
    check = compare_final_matrices(get(service, "final_matrix"), get(peer, "final_matrix"))
    rows.append(matrix_row(check, "numpy"))
    check_unset = None
    if peer_unset:
        check_unset = compare_final_matrices(get(service, "final_matrix"),
                                             get(peer_unset, "final_matrix"))
        rows.append(matrix_row(check_unset, "numpy unset"))
    notes = [f"numpy ran twice: as set, and with {UNSET_TEXT} (OpenBLAS picks its own kernel); "
             "ckad is judged against the faster of the two per workload (named in the baseline)"]
    if limited:
        notes.append("end to end, " + CPU_LIMIT_NOTE + " (see (4))")
    return rows, notes, check, check_unset


def stream_index(name, position):
    """The stream index of a stream name ('s3', 'w/layer03' -> 3), else its position."""
    m = re.search(r"(\d+)$", str(name))
    return int(m.group(1)) if m else position


def compare_final_matrices(ckad, peer):
    """Max |ckad − numpy| over the final CKA matrices; streams matched by trailing number.

    Returns {"workload", "max_abs_diff" (None if not comparable), "note", "error"}: error is a
    message when both matrices exist but cannot be compared (shape or workload mismatch).
    """
    out = {"workload": get(ckad, "workload") or get(peer, "workload"),
           "max_abs_diff": None, "note": "", "error": None}
    a, b = get(ckad, "values"), get(peer, "values")
    if not isinstance(a, list) or not isinstance(b, list):
        out["note"] = "not measured: " + ("no ckad matrix" if not isinstance(a, list)
                                           else "no numpy matrix")
        return out
    if get(ckad, "workload") != get(peer, "workload"):
        out["error"] = (f"ckad's final matrix is of {get(ckad, 'workload')}, "
                        f"numpy's of {get(peer, 'workload')}")
        out["note"] = out["error"]
        return out
    names = get(ckad, "streams")
    order = list(range(len(a)))
    if isinstance(names, list) and len(names) == len(a):
        idx = [stream_index(s, i) for i, s in enumerate(names)]
        if sorted(idx) == list(range(len(a))):
            order = idx  # row i of ckad's matrix is stream idx[i]
    if len(a) != len(b) or any(not isinstance(r, list) or len(r) != len(b) for r in a):
        out["error"] = f"shapes differ: ckad {len(a)} rows, numpy {len(b)}×{len(b)}"
        out["note"] = out["error"]
        return out
    worst, bad = 0.0, 0
    for i, r in enumerate(a):
        for j, v in enumerate(r):
            x, y = num(v), num(b[order[i]][order[j]])
            if x is None or y is None:
                bad += (x is None) != (y is None)
                continue
            worst = max(worst, abs(x - y))
    if bad:
        out["error"] = f"{bad} entries have a value on one side only"
        out["note"] = out["error"]
        return out
    out["max_abs_diff"] = worst
    batches = (get(ckad, "batches"), get(peer, "batches"))
    out["note"] = f"{len(a)}×{len(a)}; batches ckad {batches[0]}, numpy {batches[1]}"
    return out


def section_submit(service, peer, peer_unset):
    """(6) Submit p50/p99 µs / the faster numpy's per-batch p50 of that workload (≤ 1 %).

    The target is judged on the paced run (batches submitted at 80 % of the rate ckad
    sustained, as a training loop that computes between batches); the unpaced run's
    figures include the time Submit waits for queue room (backpressure) and are shown
    for information.
    """
    rows = []
    for e in get(service, "end_to_end") or []:
        name = get(e, "workload")
        entry, which = faster_numpy(peer, peer_unset, name)
        p50_ms = num(get(entry, "batch_ms_p50"))
        base_us = p50_ms * 1e3 if p50_ms is not None else None
        base_what = f"numpy {which} p50" if which else "numpy p50"
        paced = num(get(e, "paced_interval_ms"))
        for q in ("p50", "p99"):
            v = get(e, f"paced_submit_us_{q}")
            mx = num(get(e, "paced_submit_us_max"))
            note = f"one per {paced:.1f} ms" if paced is not None else ""
            if q == "p99" and mx is not None:
                note += f", max {mx:.0f} µs"
            rows.append(row(f"{name} {get(e, 'mode')} Submit {q}", v, "µs", base_us, "µs",
                            base_what, ratio(v, base_us), "submit_vs_numpy", percent=True,
                            note=note))
        for q in ("p50", "p99"):
            v = get(e, f"paced_submit_cpu_us_{q}")
            if v is not None:
                rows.append(row(f"{name} {get(e, 'mode')} Submit {q}, caller's CPU time", v,
                                "µs", base_us, "µs", base_what, ratio(v, base_us),
                                percent=True, note="paced run"))
        control = get(e, "paced_control_us_p99")
        if control is not None:
            c50 = num(get(e, "paced_control_us_p50"))
            rows.append(row(f"{name} {get(e, 'mode')} fixed-work control p99", control, "µs",
                            base_us, "µs", base_what, ratio(control, base_us), percent=True,
                            note=(f"p50 {c50:.0f} µs; the same arithmetic timed after each "
                                  "Submit: p99 minus p50 is what this machine adds to any "
                                  "short call" if c50 is not None else "")))
        for q in ("p50", "p99"):
            v = get(e, f"submit_us_{q}")
            rows.append(row(f"{name} {get(e, 'mode')} Submit {q}, unpaced", v, "µs", base_us,
                            "µs", base_what, ratio(v, base_us), percent=True,
                            note="includes waiting for queue room" if q == "p99" else ""))
    if not rows:
        rows.append(row("Submit latency", target="submit_vs_numpy", percent=True))
    return rows, ["the target is judged on the paced runs (80 % of the rate ckad sustained)",
                  "numpy p50 of the faster numpy run of that workload (see (5))"]


def section_memory(service):
    """(7) RSS after the checkpoints (growth between them) and session state for 256 streams."""
    mem = get(service, "memory")
    rows = []
    start = num(get(mem, "rss_mb_start"))
    if start is not None:
        rows.append(row("RSS at start", start, "MB"))
    cps = [c for c in get(mem, "checkpoints") or [] if isinstance(c, dict)]
    prev = start
    for c in cps:
        rss = num(get(c, "rss_mb"))
        hwm = num(get(c, "vm_hwm_mb"))
        idle = num(get(c, "idle_rss_mb"))
        growth = rss - prev if rss is not None and prev is not None else None
        note = ", ".join(s for s in (
            f"growth {growth:+.1f} MB" if growth is not None else "",
            f"VmHWM {hwm:.1f} MB" if hwm is not None else "",
            f"{idle:.1f} MB after {num(get(c, 'idle_s')):.0f} s idle" if idle is not None
            else "") if s)
        rows.append(row(f"RSS after {get(c, 'batches')} batches", rss, "MB", note=note))
        prev = rss
    if len(cps) >= 2:
        def growth_of(key):
            first, last = num(get(cps[0], key)), num(get(cps[-1], key))
            return last - first if first is not None and last is not None else None
        span = f"{get(cps[0], 'batches')} → {get(cps[-1], 'batches')} batches"
        rows.append(row(f"growth {span}, right after the flush", growth_of("rss_mb"), "MB",
                        note="includes up to --max-retained-free-mb of freed memory kept for "
                             "reuse, trimmed every 10 s at most: varies with the trim's timing"))
        rows.append(row(f"growth {span}, idle (flat?)", growth_of("idle_rss_mb"), "MB",
                        target="memory_growth_mb"))
    else:
        rows.append(row("RSS growth between checkpoints", unit="MB", target="memory_growth_mb"))
    state = num(get(mem, "session_state_bytes_256_streams"))
    delta = num(get(mem, "session_state_rss_delta_mb_256_streams"))
    exported = num(get(mem, "session_export_bytes_256_streams"))
    note = ", ".join(s for s in (
        f"{state:.0f} bytes of sums" if state is not None else "",
        f"{exported:.0f} bytes exported" if exported is not None else "",
        f"ckad RSS {delta:+.1f} MB for it" if delta is not None else "") if s)
    rows.append(row("session state, 256 streams", state / 1e6 if state is not None else None,
                    "MB", note=note))
    notes = [f"workload {get(mem, 'workload')}"] if get(mem, "workload") else []
    return rows, notes


def section_queries(service):
    """(8) GetSimilarity p50/p99 for 256 streams (p99 ≤ 10 ms)."""
    q = get(service, "queries")
    note = ""
    if isinstance(q, dict):
        note = (f"{get(q, 'streams')} streams, {get(q, 'entries')} entries, "
                f"{get(q, 'queries')} queries, {get(q, 'ingest_batches_during')} batches "
                "ingested meanwhile")
    mx = num(get(q, "max_ms"))
    rows = [row("GetSimilarity p50", get(q, "p50_ms"), "ms", note=note),
            row("GetSimilarity p99", get(q, "p99_ms"), "ms", target="query_p99_ms",
                note=f"max {mx:.2f} ms" if mx is not None else ""),
            row("GetSimilarity p99 inside ckad", get(q, "server_p99_ms"), "ms",
                note=(f"p50 {num(get(q, 'server_p50_ms')):.2f} ms; queued query to converted "
                      "matrix (x-cka-server-time-ms), without transport and client"
                      if num(get(q, "server_p50_ms")) is not None else ""))]
    return rows, []


def matrix_errors(check, whose):
    """The errors of one final-matrix check against `whose` matrix ([] when it passed)."""
    if check is None:
        return []
    if check["error"]:
        return [f"final matrix vs {whose}: {check['error']}"]
    if check["max_abs_diff"] is not None and not meets(check["max_abs_diff"],
                                                       "final_matrix_max_abs_diff"):
        return [f"final {check['workload']} CKA matrix of ckad differs from {whose} by "
                f"{check['max_abs_diff']:.3g} > {TARGETS['final_matrix_max_abs_diff'][1]:g}"]
    return []


def build_report(core, sgemm_unset, service, peer, peer_unset=None):
    """The report as a dict: sections with rows, the final-matrix checks, a summary, errors."""
    core, sgemm_unset, service, peer, peer_unset = (
        x if isinstance(x, dict) else {} for x in (core, sgemm_unset, service, peer, peer_unset))
    sections = []
    parts = [section_sgemm(core, sgemm_unset), section_core(core, sgemm_unset),
             section_transport(service), section_e2e_transport(core, service)]
    rows5, notes5, check, check_unset = section_numpy(core, service, peer, peer_unset)
    parts += [(rows5, notes5), section_submit(service, peer, peer_unset),
              section_memory(service), section_queries(service)]
    for number, (rows, notes) in enumerate(parts, start=1):
        sections.append({"number": number, "title": SECTION_TITLES[number], "rows": rows,
                         "notes": notes})
    errors = (matrix_errors(check, "numpy's")
              + matrix_errors(check_unset, f"numpy's with {UNSET_TEXT}"))
    ceiling, which = sgemm_ceiling(core, sgemm_unset)
    summary = {"pass": 0, "miss": 0, "not_measured": 0}
    for s in sections:
        for r in s["rows"]:
            if "target" in r:
                key = {True: "pass", False: "miss", None: "not_measured"}[r["pass"]]
                summary[key] += 1
    return {"sections": sections, "final_matrix_check": check,
            "final_matrix_check_unset": check_unset, "summary": summary, "errors": errors,
            "targets": {k: {"op": op, "limit": v} for k, (op, v) in TARGETS.items()},
            "sgemm_ceiling": {"gflops": ceiling, "which": which},
            "numpy": {"version": get(peer, "numpy_version") or get(peer_unset, "numpy_version"),
                      "blas": get(peer, "blas"), "blas_unset": get(peer_unset, "blas")},
            "machine": get(service, "machine")}


# ---------------------------------------------------------------------------------------------
# Rendering

def fmt_value(v, unit=""):
    """A figure with its unit, 'not measured' when missing."""
    if v is None:
        return "not measured"
    if unit == "" and abs(v) < 1e-3 and v != 0:
        text = f"{v:.2e}"
    elif abs(v) >= 100:
        text = f"{v:,.0f}"
    elif abs(v) >= 10:
        text = f"{v:.1f}"
    else:
        text = f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return f"{text} {unit}".strip()


def fmt_ratio(r):
    """The ratio cell of a row ('' for a row without baseline)."""
    if not r["baseline_what"]:
        return ""
    if r["ratio"] is None:
        return "—"
    if r["ratio_percent"]:
        return f"{r['ratio'] * 100:.3g} %"
    return f"{r['ratio']:.2f}"


def fmt_result(r):
    """PASS / MISS / ERROR / not measured / '' (no target)."""
    if "target" not in r:
        return ""
    if r["pass"] is None:
        return "not measured"
    if r["pass"]:
        return "pass"
    return "ERROR" if r.get("error_if_missed") else "MISS"


def render_table(header, lines):
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(str(x[i])) for x in [header] + lines) for i in range(len(header))]
    out = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip(),
           "  ".join("-" * w for w in widths)]
    for line in lines:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
    return out


def render_text(report, context=None):
    """The whole report as text (what report.py prints)."""
    out = ["ckad performance report"]
    if context:
        out.append(context)
    machine = report.get("machine")
    if isinstance(machine, dict) and machine:
        out.append("machine: " + ", ".join(f"{k}={v}" for k, v in machine.items()))
    npi = report.get("numpy") or {}
    blas = npi.get("blas") or npi.get("blas_unset") or {}
    if npi.get("version"):
        kernels = [f"{what} {blas_kernel(npi.get(key)) or '?'}"
                   for what, key in (("as set", "blas"), ("unset", "blas_unset")) if npi.get(key)]
        out.append(f"numpy peer: numpy {npi['version']}, BLAS "
                   f"{blas.get('config') or blas.get('loaded') or '?'}, "
                   f"{blas.get('num_threads', '?')} threads, "
                   f"kernel {', '.join(kernels) or '?'}")
    header = ["", "figure", "baseline", "ratio", "target", "result", "notes"]
    for s in report["sections"]:
        out.append("")
        out.append(f"({s['number']}) {s['title']}")
        lines = []
        for r in s["rows"]:
            base = ""
            if r["baseline_what"]:
                base = f"{r['baseline_what']} {fmt_value(r['baseline'], r['baseline_unit'])}"
            lines.append([r["item"], fmt_value(r["value"], r["unit"]), base,
                          fmt_ratio(r),
                          r.get("target", ""), fmt_result(r), r["note"]])
        out.extend("  " + line for line in render_table(header, lines))
        for note in s["notes"]:
            out.append(f"  note: {note}")
    sm = report["summary"]
    out.append("")
    out.append(f"targets: {sm['pass']} pass, {sm['miss']} miss, "
               f"{sm['not_measured']} not measured")
    for e in report.get("failures", []):
        out.append(f"FAILED: {e}")
    for e in report["errors"]:
        out.append(f"ERROR: {e}")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Running the programs

def load_json(path):
    """The JSON object in path; {} for '-' (not measured). Raises ValueError on bad content."""
    if path in (None, "-"):
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file")
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def command_text(cmd, env=None):
    """The command line as a shell would run it (env -u for each variable taken away)."""
    shown = " ".join(cmd)
    removed = sorted(k for k in os.environ if k not in env) if env is not None else []
    if removed:
        shown = "env " + " ".join(f"-u {k}" for k in removed) + " " + shown
    return shown


def unset_env():
    """This process's environment without UNSET_VARIABLES: OpenBLAS picks its own kernel."""
    return {k: v for k, v in os.environ.items() if k not in UNSET_VARIABLES}


def run_step(label, cmd, env=None, timeout=None):
    """Run one program with its output on stderr; return None on success, else the failure."""
    shown = command_text(cmd, env)
    print(f"report: {label}: {shown}", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(cmd, env=env, stdout=sys.stderr, stderr=sys.stderr,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"{label} ({cmd[0]}) did not finish within {timeout} s"
    except OSError as e:
        return f"{label} ({cmd[0]}) could not start: {e}"
    if proc.returncode != 0:
        return f"{label} ({cmd[0]}) failed with exit status {proc.returncode}"
    return None


def program_paths(build):
    """The programs a report runs from a build: (cka_core_bench, cka_service_bench, ckad)."""
    return (os.path.join(build, "bench", "cka_core_bench"),
            os.path.join(build, "bench", "cka_service_bench"),
            os.path.join(build, "server", "ckad"))


def benchmark_steps(args, data, files):
    """The benchmarks to run: (input key, label, command, environment or None to inherit)."""
    core_bin, service_bin, ckad_bin = program_paths(args.build)
    quick = ["--quick"] if args.quick else []
    peer = [PYTHON, os.path.join(HERE, "numpy_peer.py"), "--data", data,
            "--seconds", str(args.numpy_seconds), "--json"]
    return [
        ("core", "cka_core_bench", [core_bin, "--data", data, "--json", files["core"]] + quick,
         None),
        ("sgemm_unset", "cka_core_bench --sgemm-only",
         [core_bin, "--sgemm-only", "--json", files["sgemm_unset"]] + quick, unset_env()),
        ("service", "cka_service_bench",
         [service_bin, "--ckad", ckad_bin, "--data", data, "--json", files["service"]] + quick,
         None),
        ("numpy", "numpy_peer.py", peer + [files["numpy"]], None),
        ("numpy_unset", "numpy_peer.py, BLAS variables unset", peer + [files["numpy_unset"]],
         unset_env()),
    ]


def run_all(args, work):
    """Make the batches and run the five benchmarks; return (inputs, failures, commands)."""
    missing = [p for p in program_paths(args.build)
               if not (os.path.isfile(p) and os.access(p, os.X_OK))]
    if missing:
        for p in missing:
            print(f"report: missing program: {p} (build {args.build} first)", file=sys.stderr)
        sys.exit(2)
    data = args.keep_data or os.path.join(work, "data")
    files = {k: os.path.join(work, f"{k}.json") for k in INPUT_KEYS}
    steps = benchmark_steps(args, data, files)
    failure = run_step("make_batches.py", [PYTHON, os.path.join(HERE, "make_batches.py"),
                                           "--out", data] + (["--quick"] if args.quick else []),
                       timeout=args.timeout)
    if failure:
        print(f"report: {failure}", file=sys.stderr)
        sys.exit(1)
    inputs, failures, commands = {}, [], []
    for key, label, cmd, env in steps:
        commands.append(command_text(cmd, env))
        failure = run_step(label, cmd, env=env, timeout=args.timeout)
        if failure is None:
            try:
                inputs[key] = load_json(files[key])
            except ValueError as e:
                failure = f"{label} wrote no usable JSON: {e}"
        if failure:
            print(f"report: {failure}", file=sys.stderr)
            failures.append(failure)
            inputs[key] = {}
    return inputs, failures, commands


def run_torch_bench(args, work):
    """Run torch_bench.py (a PyTorch training loop's cost of tracking CKA: ckad streaming vs
    the in-process peer; see README) against the build's ckad. Return (its JSON figures, its
    tables, a failure or None); skipped with a note where PYTHON has no torch."""
    if subprocess.run([PYTHON, "-c", "import torch"], capture_output=True).returncode != 0:
        return {}, f"torch_bench.py skipped: {PYTHON} cannot import torch", None
    out = os.path.join(work, "torch.json")
    cmd = [PYTHON, os.path.join(HERE, "torch_bench.py"), "--ckad",
           program_paths(args.build)[2], "--json", out] + (["--quick"] if args.quick else [])
    return run_json_program("torch_bench.py", cmd, out, args.timeout)


def run_json_program(label, cmd, out, timeout):
    """Run `cmd`, which writes its figures to the JSON file `out` and its tables to stdout.
    Return (the figures, the tables, a failure or None)."""
    print(f"report: {label}: {command_text(cmd)}", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {}, "", f"{label} did not finish within {timeout} s"
    except OSError as e:
        return {}, "", f"{label} could not start: {e}"
    if proc.returncode != 0:
        return {}, proc.stdout, f"{label} failed with exit status {proc.returncode}"
    try:
        return load_json(out), proc.stdout, None
    except ValueError as e:
        return {}, proc.stdout, f"{label} wrote no usable JSON: {e}"


def run_moment_bench(args, work):
    """Run cka_moment_bench (the comparison family's query cost at p = 64 ... 2048, each next to
    one LAPACK dsyevd and one Eigen eigendecomposition of a p x p matrix in the same run; --quick:
    p = 32, 64). Return (its JSON figures, its table, a failure or None)."""
    out = os.path.join(work, "moments.json")
    cmd = [os.path.join(args.build, "bench", "cka_moment_bench"), "--json", out] + (
        ["--quick"] if args.quick else [])
    return run_json_program("cka_moment_bench", cmd, out, args.timeout)


def main(argv=None):
    """Parse the command line, run or load the figures, print and write the report."""
    parser = argparse.ArgumentParser(
        description="ckad's performance report: every figure next to its baseline.")
    parser.add_argument("--build", help="the CMake build directory (e.g. build/release)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny workload, to check that everything runs (no timing value)")
    parser.add_argument("--json", default="bench-report.json",
                        help="merged JSON output (default bench-report.json)")
    parser.add_argument("--keep-data", metavar="DIR",
                        help="write the batches to DIR and keep them")
    parser.add_argument("--numpy-seconds", type=float, default=None,
                        help="seconds per workload for the numpy peer (default 5, quick 0.5)")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds before a program counts as failed (default 3600)")
    parser.add_argument("--from-json", nargs=5, metavar=("CORE", "SGEMM_UNSET", "SERVICE",
                                                         "NUMPY", "NUMPY_UNSET"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.numpy_seconds is None:
        args.numpy_seconds = 0.5 if args.quick else 5.0

    failures, commands = [], []
    torch_figures, torch_text = {}, ""
    moment_figures, moment_text = {}, ""
    if args.from_json:
        inputs = {}
        for key, path in zip(INPUT_KEYS, args.from_json):
            try:
                inputs[key] = load_json(path)
            except ValueError as e:
                print(f"report: {e}", file=sys.stderr)
                return 2
        context = "re-rendered from " + " ".join(args.from_json)
    else:
        if not args.build:
            parser.error("--build is required (or --from-json)")
        work = tempfile.mkdtemp(prefix="ckad-report-")
        try:
            inputs, failures, commands = run_all(args, work)
            torch_figures, torch_text, failure = run_torch_bench(args, work)
            if failure:
                print(f"report: {failure}", file=sys.stderr)
                failures.append(failure)
            moment_figures, moment_text, failure = run_moment_bench(args, work)
            if failure:
                print(f"report: {failure}", file=sys.stderr)
                failures.append(failure)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        context = (f"build {args.build}{', quick' if args.quick else ''}, "
                   f"{datetime.datetime.now().isoformat(timespec='seconds')}, "
                   + ", ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in UNSET_VARIABLES))

    report = build_report(inputs.get("core"), inputs.get("sgemm_unset"),
                          inputs.get("service"), inputs.get("numpy"), inputs.get("numpy_unset"))
    report["failures"] = failures
    report["commands"] = commands
    report["context"] = context
    report["raw"] = inputs
    report["torch"] = torch_figures
    report["moments"] = moment_figures
    print(render_text(report, context))
    if torch_text:
        print(f"\n9. PyTorch training loop: ckad streaming vs the in-process peer\n{torch_text}")
    if moment_text:
        print(f"\n10. Moment measures (CCA, SVCCA, PWCCA, regression, Procrustes): query of one "
              f"entry, ÷ one LAPACK dsyevd and ÷ one Eigen eigendecomposition of the same p\n"
              f"{moment_text}")
    with open(args.json, "w") as f:
        json.dump(finite(report), f, indent=1, allow_nan=False)
        f.write("\n")
    print(f"\nJSON: {args.json}")
    return 1 if failures or report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
