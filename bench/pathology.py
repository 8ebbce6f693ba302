#!/usr/bin/env python3
"""CKA reveals network pathology, through ckad: blocks of near-identical layers in a deep network.

Kornblith et al. 2019 (section 6.2) show that plain networks made too deep grow a large block of
consecutive layers whose representations are nearly identical (CKA near 1 between every pair).
This script trains, on scikit-learn's bundled digits (no download), one shallow and one deep
plain ReLU MLP of the same width, streams every hidden layer's activations on a held-out probe
into one ckad session (one source per network, minibatch linear CKA), and prints the blocks ckad
finds for each (GetSimilarity with block_threshold: runs of consecutive layers whose pairwise
CKA all exceed the threshold, longest first; core/MATH.md, "Block structure") and its warning
when a block covers more than --share of a network's layers.

    /usr/bin/python3 bench/pathology.py --address 127.0.0.1:50051 [--quick]

Needs torch and scikit-learn (Debian: python3-torch, python3-sklearn) and the cka package
(client/python, with its stubs: eval "$(bash client/python/build.sh)").
"""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

import cka


def digits(seed: int, probe_rows: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (train x, train y, probe x): digits scaled to [0, 1], `probe_rows` held out."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    probe, train = order[:probe_rows], order[probe_rows:]
    return x[train], data.target[train], x[probe]


def train(depth: int, width: int, steps: int, seed: int, x: np.ndarray, y: np.ndarray):
    """Returns a plain MLP of `depth` hidden ReLU layers of `width`, trained with Adam, and its
    training accuracy."""
    import torch

    torch.manual_seed(seed)
    layers: List[torch.nn.Module] = []
    fan_in = x.shape[1]
    for _ in range(depth):
        linear = torch.nn.Linear(fan_in, width)
        # He initialisation: without it a deep stack of ReLU layers does not train.
        torch.nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        torch.nn.init.zeros_(linear.bias)
        layers += [linear, torch.nn.ReLU()]
        fan_in = width
    net = torch.nn.Sequential(*layers, torch.nn.Linear(fan_in, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(x), 64))
        loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = float((net(xt).argmax(1) == yt).float().mean())
    return net, accuracy


def hidden(net, x: np.ndarray) -> List[np.ndarray]:
    """Returns every hidden layer's output (after its ReLU) for `x`, (n, width) float32 each."""
    import torch

    out = []
    h = torch.from_numpy(x)
    with torch.no_grad():
        for module in list(net)[:-1]:
            h = module(h)
            if isinstance(module, torch.nn.ReLU):
                out.append(h.numpy().copy())
    return out


def layer_names(depth: int) -> List[str]:
    return [f"fc{i + 1:02d}" for i in range(depth)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--quick", action="store_true",
                        help="depths 2 and 8, 150 steps, a probe of 2 x 64")
    parser.add_argument("--shallow", type=int, default=3, help="hidden layers of the shallow net")
    parser.add_argument("--deep", type=int, default=24, help="hidden layers of the deep net")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--probe-batches", type=int, default=4)
    parser.add_argument("--probe-size", type=int, default=100)
    parser.add_argument("--threshold", type=float, default=0.95,
                        help="CKA above which consecutive layers are alike")
    parser.add_argument("--share", type=float, default=0.5,
                        help="warn when a block covers more than this share of the layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--session", default=f"pathology-{uuid.uuid4().hex[:8]}")
    args = parser.parse_args(argv)
    if args.quick:
        args.shallow, args.deep, args.steps = 2, 8, 150
        args.probe_batches, args.probe_size = 2, 64

    x, y, probe = digits(args.seed, args.probe_batches * args.probe_size)
    nets: Dict[str, int] = {"shallow": args.shallow, "deep": args.deep}
    streams = [f"{name}/{layer}" for name, depth in nets.items() for layer in layer_names(depth)]
    print(f"digits: {len(x)} training rows, a held-out probe of {args.probe_batches} x "
          f"{args.probe_size}; plain ReLU MLPs of width {args.width}, {args.steps} Adam steps; "
          f"ckad session {args.session}")
    with cka.Client(args.address) as client:
        client.create_session(args.session, measures=["lin:linear:unbiased"], streams=streams)
        for name, depth in nets.items():
            net, accuracy = train(depth, args.width, args.steps, args.seed, x, y)
            acts = hidden(net, probe)
            with cka.Streamer(client, args.session, name) as streamer:
                for b in range(args.probe_batches):
                    rows = slice(b * args.probe_size, (b + 1) * args.probe_size)
                    streamer.submit(b, 0, {layer: a[rows] for layer, a in
                                           zip(layer_names(depth), acts)})
            if streamer.rejected:
                print(f"{name}: rejected {streamer.rejected}", file=sys.stderr)
                return 1
            print(f"{name}: {depth} hidden layers, training accuracy {100 * accuracy:.1f} %")
        m = client.similarity(args.session, rows=streams[:1], cols=streams[:1],
                              block_threshold=args.threshold, block_warn_share=args.share)
        # The CKA of each pair of neighbouring layers, for context.
        full = client.similarity(args.session)
    index = {s: i for i, s in enumerate(full.rows)}
    print(f"\nBlocks (ckad: consecutive layers whose pairwise linear CKA all exceed "
          f"{args.threshold}; warning past {100 * args.share:.0f} % of a network's layers):")
    for name, depth in nets.items():
        mine = [b for b in m.blocks if b.source == name]
        largest = max((b.length for b in mine), default=1)
        shown = ", ".join(f"{b.first_stream.split('/')[1]}-{b.last_stream.split('/')[1]} "
                          f"(mean {b.mean_value:.3f}, min {b.min_value:.3f})"
                          for b in mine) or "none"
        layers = [f"{name}/{layer}" for layer in layer_names(depth)]
        neighbours = [full.values[index[a], index[b]] for a, b in zip(layers, layers[1:])]
        print(f"  {name}: largest block {largest} of {depth} layers "
              f"({100.0 * largest / depth:.0f} %); blocks {shown}")
        if neighbours:
            print(f"    neighbouring layers' CKA: min {np.nanmin(neighbours):.3f}, "
                  f"median {np.nanmedian(neighbours):.3f}, max {np.nanmax(neighbours):.3f}")
        for b in mine:
            if b.warning:
                print(f"  WARNING: {name}: {b.length} of its {depth} layers "
                      f"({b.first_stream} .. {b.last_stream}) are near-identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
