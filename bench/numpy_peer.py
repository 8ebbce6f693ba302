#!/usr/bin/python3
"""The numpy "peer" of ckad: minibatch linear CKA in-process, as a good numpy user writes it.

    numpy_peer.py --data DIR --json OUT [--seconds S]
    numpy_peer.py --self-test

It reads the batches of make_batches.py (DIR/workloads.json, DIR/<name>/s<i>.npy) and, for each
workload, computes what ckad computes for one batch of S streams (core/MATH.md, "HSIC estimators": linear
kernel, unbiased HSIC_1 via U-centred Grams, sums over batches):

  - per stream the Gram K_s = X_s @ X_s.T in float32 (numpy calls syrk for X @ X.T),
  - cast to float64 and U-centre all S Grams at once (stacked S x n x n array operations),
  - scale by 1/sqrt(n(n-3)) and flatten to V (S x n^2); V @ V.T is the S x S HSIC_1 matrix,
  - add it to the running sums; CKA = A_st / sqrt(A_ss * A_tt).

Each workload repeats its one batch (the same data every time, computed afresh as a new batch)
for about --seconds seconds (at least 3 batches, after one warm-up batch) and reports
batches/s, per-batch p50/p99 and GFLOP/s with the useful-flop formula of bench/core_bench.cc
(S*n(n+1)*d + S(S+1)*n^2), plus the final CKA matrix of W1 (of the first workload when there is
no W1, e.g. "Q" in quick mode), the numpy version and what can be learnt about its BLAS: the
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE it ran under and, in blas.threadpoolctl, the kernel that
OpenBLAS runs ("architecture", e.g. Haswell or Cooperlake), its threads and version as
threadpoolctl reports them (None when threadpoolctl is not installed).

--self-test checks the vectorized HSIC/CKA against a direct, slow float64 implementation of
core/MATH.md's definition of HSIC_1 and exits non-zero on a relative mismatch above 1e-9.
"""
import argparse
import ctypes
import json
import os
import sys
import time

import numpy as np


# ---------------------------------------------------------------------------------------------
# The computation (what the benchmark times)

def grams(xs):
    """Linear Grams X_s @ X_s.T of every stream, in the inputs' dtype, stacked as float64.

    xs: list of S arrays (n, d). float32 inputs give float32 Grams (syrk), then cast.
    """
    n = xs[0].shape[0]
    out = np.empty((len(xs), n, n), dtype=np.float64)
    for s, x in enumerate(xs):
        out[s] = x @ x.T  # numpy recognises X @ X.T and calls syrk; assignment casts
    return out


def u_centre(k):
    """U-centre a stack of Grams in place (S x n x n float64) and return it.

    K~ = K with zero diagonal; c_i = sum_j K~_ij; S = sum_i c_i;
    K^_ij = K~_ij - (c_i + c_j)/(n-2) + S/((n-1)(n-2)) for i != j, K^_ii = 0.
    """
    n = k.shape[1]
    diag = np.arange(n)
    k[:, diag, diag] = 0.0
    c = k.sum(axis=2)                                   # S x n
    total = c.sum(axis=1)                               # S
    k -= c[:, :, None] / (n - 2)
    k -= c[:, None, :] / (n - 2)
    k += (total / ((n - 1) * (n - 2)))[:, None, None]
    k[:, diag, diag] = 0.0
    return k


def batch_hsic(xs):
    """The S x S matrix of unbiased HSIC_1 of every pair of streams on one batch."""
    n = xs[0].shape[0]
    if n < 4:
        raise ValueError(f"the unbiased estimator needs n >= 4, got n = {n}")
    k = u_centre(grams(xs))
    k *= 1.0 / np.sqrt(n * (n - 3.0))
    v = k.reshape(len(xs), n * n)
    return v @ v.T


def cka_from_sums(sums):
    """CKA matrix from the running HSIC sums A (S x S): A_st / sqrt(A_ss A_tt); NaN if <= 0."""
    d = np.diag(sums).copy()
    d[d <= 0] = np.nan
    return sums / np.sqrt(np.outer(d, d))


def useful_flops(streams, n, d):
    """Useful floating-point work of one batch, as in bench/core_bench.cc."""
    return streams * n * (n + 1.0) * d + streams * (streams + 1.0) * n * n


# ---------------------------------------------------------------------------------------------
# The benchmark

def load_workload(data_dir, w):
    """The S float32 (n, d) arrays of workload w, checked against its declared shape."""
    xs = []
    for s in range(w["streams"]):
        path = os.path.join(data_dir, w["name"], f"s{s}.npy")
        x = np.load(path)
        if x.shape != (w["n"], w["d"]) or x.dtype != np.float32:
            raise ValueError(f"{path}: shape {x.shape} {x.dtype}, "
                             f"expected ({w['n']}, {w['d']}) float32")
        xs.append(np.ascontiguousarray(x))
    return xs


def print_blas(blas):
    """One line on stderr: the kernel threadpoolctl reports and the OpenBLAS variables."""
    tp = blas["threadpoolctl"] or {}
    print(f"numpy_peer: BLAS kernel {tp.get('architecture') or '?'} (threadpoolctl), "
          f"{tp.get('num_threads') or '?'} threads, "
          f"OPENBLAS_CORETYPE={blas['OPENBLAS_CORETYPE'] or '(unset)'}, "
          f"OPENBLAS_L2_SIZE={blas['OPENBLAS_L2_SIZE'] or '(unset)'}", file=sys.stderr)


def run_workload(xs, seconds, min_batches=3):
    """Time batches of xs for about `seconds` (at least min_batches) after one warm-up.

    Returns (per-batch times in seconds, total seconds, running HSIC sums).
    """
    sums = batch_hsic(xs)  # warm-up batch (counted in the sums, not in the timings)
    times = []
    start = time.perf_counter()
    while len(times) < min_batches or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        sums += batch_hsic(xs)
        times.append(time.perf_counter() - t0)
    return times, time.perf_counter() - start, sums


def benchmark(data_dir, seconds):
    """Run every workload of data_dir; return the result dict (see module doc)."""
    with open(os.path.join(data_dir, "workloads.json")) as f:
        workloads = json.load(f)
    names = [w["name"] for w in workloads]
    matrix_of = "W1" if "W1" in names else names[0]
    blas = blas_info()
    print_blas(blas)
    results, final = [], None
    for w in workloads:
        xs = load_workload(data_dir, w)
        times, total, sums = run_workload(xs, seconds)
        ms = np.array(times) * 1e3
        r = {
            "name": w["name"], "streams": w["streams"], "n": w["n"], "d": w["d"],
            "batches": len(times),
            "seconds": total,
            "batches_per_s": len(times) / total,
            "batch_ms_p50": float(np.percentile(ms, 50)),
            "batch_ms_p99": float(np.percentile(ms, 99)),
            "gflops": useful_flops(w["streams"], w["n"], w["d"]) * len(times) / total / 1e9,
        }
        results.append(r)
        print(f"numpy_peer: {r['name']}: {r['batches']} batches in {total:.2f} s, "
              f"{r['batches_per_s']:.2f} batches/s, p50 {r['batch_ms_p50']:.2f} ms, "
              f"p99 {r['batch_ms_p99']:.2f} ms, {r['gflops']:.1f} GFLOP/s", file=sys.stderr)
        if w["name"] == matrix_of:
            cka = cka_from_sums(sums)
            final = {"workload": w["name"],
                     "streams": [f"s{s}" for s in range(w["streams"])],
                     "batches": len(times) + 1,
                     "values": [[None if np.isnan(v) else float(v) for v in row]
                                for row in cka]}
    return {"numpy_version": np.__version__, "blas": blas,
            "seconds_target": seconds, "workloads": results, "final_matrix": final}


# ---------------------------------------------------------------------------------------------
# What numpy's BLAS is (best effort: stdlib + numpy, and threadpoolctl when installed)

def loaded_blas_libraries():
    """Paths of the BLAS/LAPACK shared libraries mapped into this process (Linux)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/" in line}
    except OSError:
        return []
    keys = ("blas", "lapack", "mkl", "blis", "atlas")
    return sorted(p for p in paths if any(k in os.path.basename(p).lower() for k in keys))


def openblas_details(libs):
    """openblas_get_config / corename / num_threads of a loaded OpenBLAS, via ctypes."""
    for path in libs:
        if "openblas" not in os.path.basename(path).lower():
            continue
        try:
            lib = ctypes.CDLL(path)
            info = {}
            for name in ("openblas_get_config", "openblas_get_corename"):
                fn = getattr(lib, name, None)
                if fn is not None:
                    fn.restype = ctypes.c_char_p
                    info[name[len("openblas_get_"):]] = fn().decode(errors="replace")
            fn = getattr(lib, "openblas_get_num_threads", None)
            if fn is not None:
                fn.restype = ctypes.c_int
                info["num_threads"] = fn()
            return info
        except OSError:
            continue
    return {}


def numpy_build_blas():
    """What numpy's build configuration says about its BLAS."""
    cfg = np.__config__
    try:  # numpy >= 1.25
        dicts = np.show_config(mode="dicts")
        return dicts.get("Build Dependencies", {}).get("blas", {})
    except TypeError:
        pass
    info = getattr(cfg, "blas_opt_info", None) or getattr(cfg, "blas_info", None) or {}
    return {k: v for k, v in info.items() if k in ("libraries", "library_dirs", "define_macros")}


THREADPOOL_FIELDS = ("architecture", "num_threads", "version", "internal_api",
                     "threading_layer", "filepath")


def threadpool_blas():
    """The BLAS that threadpoolctl finds loaded: its THREADPOOL_FIELDS (absent ones None).

    None when threadpoolctl cannot be imported; {} when it finds no BLAS. For OpenBLAS,
    "architecture" is the kernel it runs (e.g. Haswell, Cooperlake).
    """
    try:
        import threadpoolctl
    except ImportError:
        return None
    for pool in threadpoolctl.threadpool_info():
        if pool.get("user_api") == "blas":
            return {k: pool.get(k) for k in THREADPOOL_FIELDS}
    return {}


def blas_info():
    """Best-effort description of the BLAS numpy runs on."""
    libs = loaded_blas_libraries()
    info = {"build": numpy_build_blas(), "loaded": libs,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
            "cpus": os.cpu_count(),
            "threadpoolctl": threadpool_blas()}
    info.update(openblas_details(libs))
    return info


# ---------------------------------------------------------------------------------------------
# Self-test

def hsic1_direct(k, l):
    """core/MATH.md's HSIC_1 written out literally, float64, no vectorisation tricks."""
    n = k.shape[0]
    kt = np.array(k, dtype=np.float64)
    lt = np.array(l, dtype=np.float64)
    for i in range(n):
        kt[i, i] = 0.0
        lt[i, i] = 0.0
    ones = np.ones(n)
    trace = sum(kt[i, j] * lt[j, i] for i in range(n) for j in range(n))
    term2 = (ones @ kt @ ones) * (ones @ lt @ ones) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (ones @ kt @ lt @ ones)
    return (trace + term2 - term3) / (n * (n - 3))


def cka_direct(batches):
    """Minibatch CKA of core/MATH.md, direct: batches = list of lists of (n, d) float64 arrays."""
    streams = len(batches[0])
    a = np.zeros((streams, streams))
    for xs in batches:
        ks = [x @ x.T for x in xs]
        for s in range(streams):
            for t in range(streams):
                a[s, t] += hsic1_direct(ks[s], ks[t])
    return np.array([[a[s, t] / np.sqrt(a[s, s] * a[t, t]) for t in range(streams)]
                     for s in range(streams)])


def rel_err(a, b):
    """max |a - b| / max |b|."""
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def self_test():
    """Compare the vectorized path with the direct definition; return 0 if it agrees."""
    rng = np.random.default_rng(7)
    streams, n, d = 3, 10, 7
    shared = rng.standard_normal((n, d))
    batches = []
    for _ in range(3):
        base = rng.standard_normal((n, d))
        batches.append([np.maximum(0, base + 0.5 * s * rng.standard_normal((n, d)))
                        + (shared if s == 2 else 0) for s in range(streams)])
    failures = []
    # One batch, float64 inputs: the HSIC matrix element by element.
    h = batch_hsic(batches[0])
    ks = [x @ x.T for x in batches[0]]
    h_direct = np.array([[hsic1_direct(ks[s], ks[t]) for t in range(streams)]
                         for s in range(streams)])
    err = rel_err(h, h_direct)
    print(f"self-test: HSIC_1 matrix of one batch, rel. error {err:.2e}")
    if err > 1e-9:
        failures.append("HSIC_1")
    # Several batches: the minibatch CKA sums.
    sums = sum(batch_hsic(xs) for xs in batches)
    err = rel_err(cka_from_sums(sums), cka_direct(batches))
    print(f"self-test: minibatch CKA over {len(batches)} batches, rel. error {err:.2e}")
    if err > 1e-9:
        failures.append("CKA")
    # float32 inputs (float32 Grams, as timed): core/MATH.md's 1e-6 accuracy.
    sums32 = sum(batch_hsic([x.astype(np.float32) for x in xs]) for xs in batches)
    err = rel_err(cka_from_sums(sums32), cka_direct(batches))
    print(f"self-test: float32 Grams vs float64, rel. error {err:.2e} (limit 1e-6)")
    if err > 1e-6:
        failures.append("float32 accuracy")
    # CKA(X, X) = 1 and scale invariance.
    x = batches[0][0]
    c = cka_from_sums(batch_hsic([x, 3.0 * x]))
    err = float(np.max(np.abs(c - 1.0)))
    print(f"self-test: CKA(X, 3X) = 1, error {err:.2e}")
    if err > 1e-9:
        failures.append("CKA(X, 3X)")
    if failures:
        print("self-test FAILED: " + ", ".join(failures), file=sys.stderr)
        return 1
    print("self-test passed")
    return 0


def main(argv=None):
    """Parse the command line; run the self-test or the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="directory written by make_batches.py")
    parser.add_argument("--json", help="file to write the results to")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="time per workload (default 5; at least 3 batches)")
    parser.add_argument("--self-test", action="store_true",
                        help="check against a direct float64 HSIC_1 and exit")
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test()
    if not args.data or not args.json:
        parser.error("--data and --json are required (or --self-test)")
    result = benchmark(args.data, args.seconds)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
