"""Two small CNNs (different seeds) train in two processes on scikit-learn's bundled digits and
stream their layers into one ckad session; then the cross-model CKA matrix is read into NumPy
and drawn as a heatmap.

    eval "$(bash client/python/build.sh)"
    build/test/server/ckad --listen 127.0.0.1:50051 &
    /usr/bin/python3 client/python/examples/two_models.py --address 127.0.0.1:50051 --png cka.png

Each job is an ordinary training loop with ``cka.torch.ModelHooks`` around it; two real jobs on
two machines would run ``train`` the same way. What joins them is the batch id: both jobs see
the same examples at the same step (one data order, drawn from ``data_seed``), and the hooks
send the step as the batch id. Needs python3-torch and python3-sklearn; the heatmap needs
python3-matplotlib. tests/test_digits.py runs this file.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import multiprocessing
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

import cka
import cka.torch

SOURCES = {"a": 1, "b": 2}  # source -> the seed of its model's initial weights
LAYERS = ["conv1", "conv2", "fc"]


def digits() -> "tuple[torch.Tensor, torch.Tensor]":
    """Returns scikit-learn's 1797 digits: images float32 (1797, 1, 8, 8) scaled to [0, 1]
    and labels int64 (1797,)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy((data.images / 16.0).astype(np.float32)).unsqueeze(1)
    return x, torch.from_numpy(data.target.astype(np.int64))


def small_cnn(seed: int) -> torch.nn.Module:
    """Returns a CNN for 8 x 8 images whose weights are drawn from `seed`; its layers
    conv1 (n, 8, 6, 6), conv2 (n, 16, 4, 4) and fc (n, 10)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(collections.OrderedDict([
        ("conv1", torch.nn.Conv2d(1, 8, 3)),
        ("relu1", torch.nn.ReLU()),
        ("conv2", torch.nn.Conv2d(8, 16, 3)),
        ("relu2", torch.nn.ReLU()),
        ("flatten", torch.nn.Flatten()),
        ("fc", torch.nn.Linear(256, 10)),
    ]))


def batch_order(examples: int, steps: int, batch_size: int, data_seed: int) -> np.ndarray:
    """Returns the example indices of each step, int64 (steps, batch_size): epoch after epoch
    of permutations drawn from `data_seed`, the same in every job."""
    rng = np.random.default_rng(data_seed)
    epochs = -(-steps * batch_size // examples)
    order = np.concatenate([rng.permutation(examples) for _ in range(epochs)])
    return order[:steps * batch_size].reshape(steps, batch_size)


def streams() -> List[str]:
    """Returns the session's declared streams: every layer of every source."""
    return [f"{source}/{layer}" for source in SOURCES for layer in LAYERS]


def train(model: torch.nn.Module, address: str, session_id: str, source: str, *,
          steps: int = 300, batch_size: int = 64, every: int = 10,
          reduce_on_device: bool = True, data_seed: int = 0, threads: int = 1) -> Dict:
    """Trains `model` on the digits for `steps` steps of SGD, streaming `LAYERS` of every
    `every`-th step to `session_id` as `source` (batch id: the step).

    Returns a dict: "loss" (the last step's), "stats" (the streamer's StreamerStats) and
    "gram_layers" (the layers offered for n x n Gram reduction; reduce_on_device=False sends
    activations). Raises RuntimeError when ckad rejected
    a batch, CkaError when ckad cannot be reached.
    """
    torch.set_num_threads(threads)  # two jobs on one machine share its cores
    x, y = digits()
    order = torch.from_numpy(batch_order(len(x), steps, batch_size, data_seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with cka.Client(address) as client:
        # Every job creates the session with the same config: idempotent.
        client.create_session(session_id, streams=streams())
        with cka.Streamer(client, session_id, source) as streamer, \
                cka.torch.ModelHooks(streamer, model, LAYERS, every=every,
                                     reduce_on_device=reduce_on_device) as hooks:
            for step in range(steps):
                hooks.step = step  # the batch id: the same examples in both jobs
                batch = order[step]
                loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    if streamer.rejected:
        raise RuntimeError(f"{source}: ckad rejected {streamer.rejected}")
    return {"loss": float(loss), "stats": streamer.stats, "gram_layers": hooks.gram_layers}


def train_job(address: str, session_id: str, source: str, **options) -> Dict:
    """Runs `train` on a new `small_cnn` seeded for `source` (in a worker process)."""
    return train(small_cnn(SOURCES[source]), address, session_id, source, **options)


def run_jobs(address: str, session_id: str, job: Callable[..., Dict] = train_job,
             **options) -> Dict[str, Dict]:
    """Runs `job` (address, session_id, source, **options) for each source, each in its own
    process, and returns their results; re-raises a job's exception."""
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that holds gRPC
    with concurrent.futures.ProcessPoolExecutor(len(SOURCES), mp_context=spawn) as pool:
        jobs = {source: pool.submit(job, address, session_id, source, **options)
                for source in SOURCES}
        return {source: job.result() for source, job in jobs.items()}


def heatmap(m: cka.SimilarityMatrix, path: str) -> None:
    """Draws `m` (rows x cols) as a heatmap into the image file `path`."""
    import matplotlib

    matplotlib.use("Agg")  # a file, no display; in a notebook, plt.subplots() alone
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3.5))
    image = ax.imshow(m.values, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(m.cols)), m.cols, rotation=30, ha="right")
    ax.set_yticks(range(len(m.rows)), m.rows)
    for (i, j), value in np.ndenumerate(m.values):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center",
                color="k" if value > 0.6 else "w")
    fig.colorbar(image, ax=ax, label=f"CKA ({m.measure})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--session", default="digits-demo")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=10, help="track every k-th step")
    parser.add_argument("--activations", action="store_true",
                        help="send n x d activations, not the n x n Grams (n < d)")
    parser.add_argument("--png", help="draw the cross-model matrix into this file")
    args = parser.parse_args(argv)

    results = run_jobs(args.address, args.session, steps=args.steps, every=args.every,
                       reduce_on_device=not args.activations)
    for source, result in results.items():
        print(f"{source}: loss {result['loss']:.3f}, {result['stats'].acked} batches acked")
    with cka.Client(args.address) as client:
        m = client.similarity(args.session, rows=[f"a/{l}" for l in LAYERS],
                              cols=[f"b/{l}" for l in LAYERS])
    print("rows", m.rows, "cols", m.cols)
    print(np.array2string(m.values, precision=3))  # float64, NaN where there is no value
    print("common batches per entry:", m.batches.min())
    if args.png:
        heatmap(m, args.png)


if __name__ == "__main__":
    main()
