#!/usr/bin/python3
"""Write the benchmark batches that every tool of the performance report reads.

    make_batches.py --out DIR [--quick]

DIR/workloads.json is a list of {"name", "streams", "n", "d"}; DIR/<name>/s<i>.npy is the
float32 (n, d) activation matrix of stream i: ReLU of standard normal noise drawn from
numpy.random.default_rng(seed), with a fixed seed per workload and stream (see seed_for), so
every run of every tool sees the same data.

Full: W1 16 x 256 x 2048, W2 64 x 128 x 512, W3 8 x 512 x 16384 (about 300 MB in all).
--quick: one workload "Q" 4 x 64 x 256.
"""
import argparse
import json
import os
import sys

import numpy as np

# name, streams, n, d — the workloads of bench/README.md.
FULL_WORKLOADS = [
    {"name": "W1", "streams": 16, "n": 256, "d": 2048},
    {"name": "W2", "streams": 64, "n": 128, "d": 512},
    {"name": "W3", "streams": 8, "n": 512, "d": 16384},
]
QUICK_WORKLOADS = [{"name": "Q", "streams": 4, "n": 64, "d": 256}]

# Seed base per workload; stream i of a workload uses base + i.
SEED_BASE = {"W1": 1000, "W2": 2000, "W3": 3000, "Q": 9000}


def seed_for(workload_name, stream):
    """The fixed seed of one stream of one workload."""
    return SEED_BASE[workload_name] + stream


def activations(n, d, seed):
    """ReLU of standard normal noise, float32, shape (n, d), C order."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    np.maximum(x, 0, out=x)
    return x


def write_batches(out_dir, workloads):
    """Write workloads.json and every stream's .npy file under out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    for w in workloads:
        wdir = os.path.join(out_dir, w["name"])
        os.makedirs(wdir, exist_ok=True)
        for s in range(w["streams"]):
            x = activations(w["n"], w["d"], seed_for(w["name"], s))
            np.save(os.path.join(wdir, f"s{s}.npy"), x)
    # Written last: a directory with workloads.json is complete.
    with open(os.path.join(out_dir, "workloads.json"), "w") as f:
        json.dump(workloads, f, indent=1)
        f.write("\n")


def main(argv=None):
    """Parse the command line and write the batches."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory to write into")
    parser.add_argument("--quick", action="store_true",
                        help='one small workload "Q" (4 x 64 x 256)')
    args = parser.parse_args(argv)
    workloads = QUICK_WORKLOADS if args.quick else FULL_WORKLOADS
    write_batches(args.out, workloads)
    total = sum(w["streams"] * w["n"] * w["d"] * 4 for w in workloads)
    print(f"make_batches: {len(workloads)} workload(s), {total / 1e6:.1f} MB in {args.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
