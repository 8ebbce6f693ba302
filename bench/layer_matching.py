#!/usr/bin/python3
"""The paper's sanity check through ckad: which layer of one network corresponds to which layer
of another, by every measure (Kornblith et al. 2019, Table 2), on scikit-learn's digits.

    eval "$(bash client/python/build.sh)"
    build/test/server/ckad --listen 127.0.0.1:50051 &
    /usr/bin/python3 bench/layer_matching.py --address 127.0.0.1:50051

Ten small CNNs of one architecture (`Run`; seeds 0..9 draw the initial weights and the data
order) train on the digits not held out, each in its own process (spawned, torch on one
thread). After training, each streams its layers' activations on the same held-out probe
batches (batch ids ``probe-0``, ``probe-1``, ... line up across networks) into ONE ckad
session with declared streams of declared width, and saves the same float32 activations to
<out-dir>/<source>.npz.
Then, for every measure, the layer-matching accuracy: for each layer i of each network a and
each other network b, is the layer of b most similar to a's layer i b's layer i? (the logits
are left out, as in the paper). The table shows it from ckad for the measures ckad serves and
from NumPy float64 on the saved activations for all of them, with the largest |ckad - NumPy|
over the whole matrix; the script exits 1 when that exceeds 1e-6 for a measure ckad serves.

Each row of MEASURES names the ckad measure that serves it (a ckactl spec: name:kernel:estimator
for CKA, name:kind for the comparison family, e.g. cca_r2:cca_r2, regression:regression_r2,
whose entry (s, t) is R^2(s -> t)); ckad is asked whenever the client accepts that spec, and a
row ckad cannot serve (RBF CKA over all rows at once) says "not a ckad query". Where a stream has
no variance (a layer whose units all died) both sides leave the entry NaN, and the comparison
requires the same NaN entries.

Then "CKA reveals network pathology": a deeper variant (many more fully connected layers of one
width) trains the same way into a second session, and for every network the maximal runs of
consecutive layers whose pairwise CKA (ckad's exact linear CKA) all exceed --threshold are
printed.

--quick (3 networks, few steps, small probe) is what client/python/tests/test_layer_matching.py
runs. Needs python3-torch and python3-sklearn.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import multiprocessing
import os
import sys
import tempfile
import uuid
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "client", "python"))  # spawned workers inherit it

import cka  # noqa: E402

#: Largest |ckad - NumPy| accepted for a CKA value: ckad's contract for float32 input against
#: a float64 computation (core/MATH.md, "Properties").
TOLERANCE = 1e-6
RBF_THRESHOLD = 0.4  # the paper's Table 2 reports RBF CKA at 0.2, 0.4 and 0.8; 0.4 gave 99.1 %
# core/MATH.md, "Rank rule and invariances" and "SVCCA".
RANK_TOLERANCE = 1e-10
CANCELLATION_FLOOR = 1e-12
SVCCA_SHARE = 0.99
PWCCA_COINCIDENT = 1e-6


# ---------------------------------------------------------------------------------------------
# Networks and their training, one process each.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    """What every network of a run shares: the architecture, the data split and the training.

    The network: 3 x 3 convolutions without padding on the 8 x 8 image (channels `convs`, each
    followed by a ReLU), flattened, then `depth` fully connected layers of `width` units with
    ReLUs, then the 10 logits. Its tracked layers are the ReLUs (the logits are left out, as in
    the paper); a "deeper variant" has a larger `depth`.
    """

    convs: Tuple[int, ...]
    depth: int
    width: int
    steps: int
    probe_batches: int
    probe_size: int
    batch_size: int = 64
    lr: float = 1e-3
    data_seed: int = 0  # the held-out split, the same for every network

    @property
    def layers(self) -> List[str]:
        """Returns the tracked modules, in the network's order."""
        return [f"relu{i + 1}" for i in range(len(self.convs) + self.depth)]

    @property
    def widths(self) -> List[int]:
        """Returns the width of each tracked layer (channels x height x width for a conv)."""
        return ([c * (6 - 2 * i) ** 2 for i, c in enumerate(self.convs)]
                + [self.width] * self.depth)

    def describe(self) -> str:
        return (f"CNN conv {'-'.join(map(str, self.convs))} + {self.depth} x fc {self.width}"
                f" ({len(self.layers)} tracked layers, widths "
                f"{'-'.join(map(str, self.widths))})")


def network(run: Run, seed: int):
    """Returns `run`'s network with He-initialised weights (zero biases) drawn from `seed`."""
    import torch

    torch.manual_seed(seed)
    modules: List[Tuple[str, torch.nn.Module]] = [("image", torch.nn.Unflatten(1, (1, 8, 8)))]
    channels = 1
    for i, c in enumerate(run.convs):
        modules += [(f"conv{i + 1}", torch.nn.Conv2d(channels, c, 3)),
                    (f"relu{i + 1}", torch.nn.ReLU())]
        channels = c
    modules.append(("flatten", torch.nn.Flatten()))
    inputs = run.widths[len(run.convs) - 1] if run.convs else 64
    for i in range(len(run.convs), len(run.layers)):
        modules += [(f"fc{i + 1}", torch.nn.Linear(inputs, run.width)),
                    (f"relu{i + 1}", torch.nn.ReLU())]
        inputs = run.width
    modules.append(("logits", torch.nn.Linear(inputs, 10)))
    model = torch.nn.Sequential(collections.OrderedDict(modules))
    for module in model:
        # He initialisation: without it a deep stack of ReLU layers does not train.
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.zeros_(module.bias)
    return model


def digits_split(run: Run) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Returns (train images float32 (m, 64), train labels int64 (m,), probe images float32
    (probe_batches * probe_size, 64), probe labels): the probe examples are held out, drawn
    from `run.data_seed`."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(run.data_seed).permutation(len(x))
    held = run.probe_batches * run.probe_size
    if held >= len(x):
        raise ValueError(f"probe of {held} examples leaves none of the {len(x)} to train on")
    probe, train = order[:held], order[held:]
    return x[train], y[train], x[probe], y[probe]


def train_network(address: str, session_id: str, source: str, seed: int, run: Run,
                  out_dir: str) -> Dict:
    """Trains `network(run, seed)` with Adam on the digits (data order drawn from
    `seed`), then streams its layers on the probe batches to `session_id` as `source` (batch id
    ``probe-k``) and saves them to out_dir/<source>.npz (layer -> float32 (probe_batches,
    probe_size, layer width)). Runs in a worker process.

    Returns a dict: "source", "loss" (last step), "accuracy" (on the probe), "acked".
    Raises RuntimeError when ckad rejected a batch, CkaError when ckad cannot be reached.
    """
    import torch

    import cka.torch

    torch.set_num_threads(1)  # the workers share the machine's cores
    x, y, px, py = (torch.from_numpy(a) for a in digits_split(run))
    model = network(run, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=run.lr)
    rng = np.random.default_rng(1000 + seed)
    order = np.concatenate([rng.permutation(len(x)) for _ in
                            range(-(-run.steps * run.batch_size // len(x)))])
    for step in range(run.steps):
        batch = torch.from_numpy(order[step * run.batch_size:(step + 1) * run.batch_size])
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.eval()
    saved: Dict[str, List[np.ndarray]] = {layer: [] for layer in run.layers}

    def record(layer: str):
        def hook(module, inputs, output) -> None:
            saved[layer].append(output.detach().numpy().copy())
        return hook

    handles = [model.get_submodule(layer).register_forward_hook(record(layer))
               for layer in run.layers]
    correct = 0
    probes = px.reshape(run.probe_batches, run.probe_size, 64)
    labels = py.reshape(run.probe_batches, run.probe_size)
    with cka.Client(address) as client:
        with cka.Streamer(client, session_id, source) as streamer, \
                cka.torch.ModelHooks(streamer, model, run.layers, eval_only=True,
                                     batch_id=lambda k: f"probe-{k}") as hooks, \
                torch.no_grad():
            for k in range(run.probe_batches):
                hooks.step = k
                correct += int((model(probes[k]).argmax(1) == labels[k]).sum())
    for handle in handles:
        handle.remove()
    if streamer.rejected:
        raise RuntimeError(f"{source}: ckad rejected {streamer.rejected}")
    np.savez(os.path.join(out_dir, f"{source}.npz"),
             **{layer: np.stack(v).reshape(run.probe_batches, run.probe_size, -1)
                for layer, v in saved.items()})
    return {"source": source, "loss": float(loss), "acked": streamer.stats.acked,
            "accuracy": correct / (run.probe_batches * run.probe_size)}


def sources(prefix: str, networks: int) -> List[str]:
    """Returns the sources of `networks` networks: prefix00, prefix01, ..."""
    return [f"{prefix}{i:02d}" for i in range(networks)]


@dataclasses.dataclass(frozen=True)
class Group:
    """Networks of one architecture streaming into one session."""

    session_id: str
    measures: Sequence[cka.Measure]
    names: Sequence[str]
    run: Run


def train_all(address: str, groups: Sequence[Group], out_dir: str,
              workers: int) -> Dict[str, Dict]:
    """Creates each group's session with its measures and every stream of its networks
    declared, then trains and streams each network in its own process, `workers` at a time;
    returns their results by source."""
    with cka.Client(address) as client:
        for g in groups:
            streams = [f"{s}/{layer}" for s in g.names for layer in g.run.layers]
            client.create_session(g.session_id, measures=g.measures, streams=streams,
                                  stream_widths=g.run.widths * len(g.names))
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that holds gRPC
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=spawn,
                                                max_tasks_per_child=1) as pool:
        jobs = [pool.submit(train_network, address, g.session_id, s, seed, g.run, out_dir)
                for g in groups for seed, s in enumerate(g.names)]
        return {job.result()["source"]: job.result() for job in jobs}


def load(out_dir: str, names: Sequence[str], run: Run) -> Tuple[List[str], List[np.ndarray]]:
    """Returns the streams ``source/layer`` and their saved activations, each float32
    (probe_batches, probe_size, width)."""
    streams, acts = [], []
    for s in names:
        with np.load(os.path.join(out_dir, f"{s}.npz")) as saved:
            for layer in run.layers:
                streams.append(f"{s}/{layer}")
                acts.append(saved[layer])
    return streams, acts


# ---------------------------------------------------------------------------------------------
# NumPy float64, from the activations, following core/MATH.md. Each returns an S x S matrix of
# the streams' values; entry (s, t) compares stream s with stream t.
# ---------------------------------------------------------------------------------------------


def hsic_unbiased(kernels: np.ndarray) -> np.ndarray:
    """Returns Song et al.'s HSIC1 of every pair of `kernels` (S, n, n), an S x S matrix."""
    s, n, _ = kernels.shape
    k = kernels.astype(np.float64, copy=True)
    k[:, np.arange(n), np.arange(n)] = 0.0  # K~: the diagonal set to 0
    flat = k.reshape(s, n * n)
    rows = k.sum(axis=2)  # K~ 1, (S, n)
    total = rows.sum(axis=1)  # 1' K~ 1
    return (flat @ flat.T + np.outer(total, total) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * rows @ rows.T) / (n * (n - 3))


def hsic_biased(kernels: np.ndarray) -> np.ndarray:
    """Returns the paper's HSIC0 = tr(K H L H) / (n - 1)^2 of every pair of `kernels`
    (S, n, n), an S x S matrix."""
    s, n, _ = kernels.shape
    h = np.eye(n) - 1.0 / n
    centred = (h @ kernels.astype(np.float64) @ h).reshape(s, n * n)
    return centred @ kernels.reshape(s, n * n).astype(np.float64).T / (n - 1) ** 2


def linear_kernels(acts: Sequence[np.ndarray], b: int) -> np.ndarray:
    """Returns the linear Grams X X^T of batch `b` of every stream, (S, n, n) float64."""
    return np.stack([a[b].astype(np.float64) @ a[b].astype(np.float64).T for a in acts])


def rbf_kernels(acts: Sequence[np.ndarray], b: int, threshold: float) -> np.ndarray:
    """Returns the RBF kernels exp(-D^2 / (2 t^2 median D^2)) of batch `b` of every stream,
    the median over all n^2 entries of D^2 (core/MATH.md, "Kernels")."""
    out = []
    for k in linear_kernels(acts, b):
        d2 = np.maximum(np.diag(k)[:, None] + np.diag(k)[None, :] - 2.0 * k, 0.0)
        out.append(np.exp(-d2 / (2.0 * threshold**2 * np.median(d2))))
    return np.stack(out)


def cka_of(hsic: np.ndarray) -> np.ndarray:
    """Returns the CKA matrix of an S x S matrix of summed HSIC values."""
    self_terms = np.sqrt(np.diag(hsic))
    return hsic / np.outer(self_terms, self_terms)


def minibatch_cka(acts: Sequence[np.ndarray], kernel: str) -> np.ndarray:
    """Returns minibatch CKA (unbiased HSIC summed over the probe batches) with the
    "linear" or "rbf" kernel."""
    batches = acts[0].shape[0]
    total = 0.0
    for b in range(batches):
        kernels = (linear_kernels(acts, b) if kernel == "linear"
                   else rbf_kernels(acts, b, RBF_THRESHOLD))
        total = total + hsic_unbiased(kernels)
    return cka_of(total)


def all_rows(acts: Sequence[np.ndarray]) -> List[np.ndarray]:
    """Returns every stream's activations over all probe rows, float64 (N, d)."""
    return [a.reshape(-1, a.shape[-1]).astype(np.float64) for a in acts]


def exact_cka(acts: Sequence[np.ndarray]) -> np.ndarray:
    """Returns exact linear CKA over all N probe rows: ||C_st||_F^2 / (||C_ss|| ||C_tt||)."""
    rows = all_rows(acts)
    x = np.concatenate(rows, axis=1)
    x -= x.mean(axis=0)
    c = x.T @ x  # every C_st, as blocks of the D x D centred cross moment
    ends = np.cumsum([r.shape[1] for r in rows])
    starts = np.r_[0, ends[:-1]]
    z = np.array([[np.sum(c[a:b, e:f] ** 2) for e, f in zip(starts, ends)]
                  for a, b in zip(starts, ends)])
    return cka_of(z)


def exact_debiased_cka(acts: Sequence[np.ndarray]) -> np.ndarray:
    """Returns linear CKA with the unbiased HSIC over all N probe rows (one batch of N)."""
    return cka_of(hsic_unbiased(np.stack([x @ x.T for x in all_rows(acts)])))


def rbf_all_rows_cka(acts: Sequence[np.ndarray]) -> np.ndarray:
    """Returns RBF CKA with the biased HSIC over all N probe rows at once (the paper's way)."""
    merged = [x.reshape(1, *x.shape) for x in all_rows(acts)]
    return cka_of(hsic_biased(rbf_kernels(merged, 0, RBF_THRESHOLD)))


@dataclasses.dataclass
class Basis:
    """A stream's centred data (N x d), the left singular vectors it keeps (N x r) and their
    singular values (r): the eigenpairs of C_xx that the rank rule keeps, in data terms."""

    centred: np.ndarray
    u: np.ndarray
    s: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> "Basis":
        centred = x - x.mean(axis=0)
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        zero = max(RANK_TOLERANCE * s[0] ** 2, CANCELLATION_FLOOR * np.max(np.sum(x * x, 0)))
        r = int(np.sum(s**2 > zero))
        return cls(centred, u[:, :r], s[:r])

    def svcca_kept(self) -> int:
        """Returns the fewest leading directions holding SVCCA_SHARE of the kept variance."""
        share = np.cumsum(self.s**2) / np.sum(self.s**2)
        return int(np.argmax(share >= SVCCA_SHARE)) + 1


class Pair:
    """Two streams' kept bases and M = U_x^T U_y (r_x x r_y), the whitened cross moment in the
    kept bases, whose singular values are the canonical correlations; every measure of the
    comparison family is a function of it (core/MATH.md, "Comparison family from second
    moments"), so a pair computes it and its SVD once."""

    def __init__(self, x: Basis, y: Basis, m: Optional[np.ndarray] = None) -> None:
        self.x, self.y = x, y
        self.m = x.u.T @ y.u if m is None else m
        self._svd: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None

    @property
    def svd(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns (a (r_x, p), rho (p,), b^T (p, r_y)): M = a diag(rho) b^T, p = min(r_x, r_y)."""
        if self._svd is None:
            self._svd = np.linalg.svd(self.m, full_matrices=False)
        return self._svd

    def swapped(self) -> "Pair":
        """Returns the pair (Y, X), sharing the products already computed."""
        pair = Pair(self.y, self.x, self.m.T)
        if self._svd is not None:
            a, rho, bt = self._svd
            pair._svd = (bt.T, rho, a.T)
        return pair


def cca_r2(p: Pair) -> float:
    rho = p.svd[1]
    return float(np.sum(rho**2) / len(rho))


def cca_mean_rho(p: Pair) -> float:
    return float(np.mean(p.svd[1]))


def svcca(p: Pair) -> float:
    k, m = p.x.svcca_kept(), p.y.svcca_kept()
    return float(np.mean(np.linalg.svd(p.m[:k, :m], compute_uv=False)))


def pwcca(p: Pair) -> float:
    a, rho, bt = p.svd
    # Canonical variates (N x p, unit norm) of the side with fewer kept dimensions.
    if len(p.x.s) <= len(p.y.s):
        h, data = p.x.u @ a, p.x.centred
    else:
        h, data = p.y.u @ bt.T, p.y.centred
    projections = h.T @ data  # p x d: <h_i, z_j>
    # A run of coinciding correlations shares the weight sum_j ||<H_run, z_j>||_2 of its span,
    # which for a run of one is the paper's sum_j |<h_i, z_j>| (core/MATH.md, "PWCCA").
    alpha = np.empty(len(rho))
    begin = 0
    while begin < len(rho):
        end = begin + 1
        while end < len(rho) and rho[end - 1] - rho[end] <= PWCCA_COINCIDENT:
            end += 1
        alpha[begin:end] = np.sum(np.linalg.norm(projections[begin:end], axis=0)) / (end - begin)
        begin = end
    return float(np.sum(alpha * rho) / np.sum(alpha))


def regression(p: Pair) -> float:
    """R^2(X -> Y): the share of Y's kept centred variance a least-squares fit from X explains."""
    return float(np.sum((p.m * p.y.s) ** 2) / np.sum(p.y.s**2))


def procrustes(p: Pair) -> float:
    nuclear = np.sum(np.linalg.svd(p.x.s[:, None] * p.m * p.y.s, compute_uv=False))
    return float(nuclear / np.sqrt(np.sum(p.x.s**2) * np.sum(p.y.s**2)))


FAMILY: Dict[str, Callable[[Pair], float]] = {
    "cca_r2": cca_r2, "cca_mean_rho": cca_mean_rho, "svcca": svcca, "pwcca": pwcca,
    "regression": regression, "procrustes": procrustes,
}


def comparison_family(acts: Sequence[np.ndarray]) -> Dict[str, np.ndarray]:
    """Returns FAMILY's S x S matrices over all probe rows; entry (s, t) is measure(s, t) (for
    the regression R^2(s -> t): the row predicts the column, as in ckad). NaN where a stream
    has no variance."""
    bases = [Basis.of(x) for x in all_rows(acts)]
    out = {name: np.full((len(bases), len(bases)), np.nan) for name in FAMILY}
    for i, bx in enumerate(bases):
        for j in range(i, len(bases)):
            if not (len(bx.s) and len(bases[j].s)):
                continue
            pair = Pair(bx, bases[j])
            for (a, b), p in (((i, j), pair), ((j, i), pair.swapped())):
                for name, f in FAMILY.items():
                    out[name][a, b] = f(p)
    return out


@dataclasses.dataclass(frozen=True)
class MeasureRow:
    """One row of the table: a measure, the NumPy float64 function of the activations that
    computes it (an S x S matrix, or a dict of them with `key`), and the ckad measure (a ckactl
    spec name:kernel:estimator[:threshold], or name:kind) that serves it, "" when none
    could."""

    label: str
    numpy: Callable[[Sequence[np.ndarray]], object]
    ckad: str = ""
    key: str = ""
    transpose: bool = False  # the candidate layer is the row (asymmetric measures)
    paper: Optional[float] = None  # Table 2 of the paper, CIFAR-10 CNNs, percent

    def matrix(self, acts: Sequence[np.ndarray], cache: Dict[Callable, object]) -> np.ndarray:
        """Returns NumPy's S x S matrix (not transposed), computing `numpy` once per `cache`."""
        if self.numpy not in cache:
            cache[self.numpy] = self.numpy(acts)
        return cache[self.numpy][self.key] if self.key else cache[self.numpy]

    def ckad_measure(self) -> Optional[cka.Measure]:
        """Returns the measure to declare in the session, None while the client does not know
        its kind."""
        if not self.ckad:
            return None
        try:
            return cka.Measure.parse(self.ckad)
        except cka.CkaError:
            return None


MEASURES: List[MeasureRow] = [
    MeasureRow("CKA linear, minibatch (unbiased HSIC)", lambda a: minibatch_cka(a, "linear"),
               "linear:linear:unbiased"),
    MeasureRow(f"CKA RBF {RBF_THRESHOLD}, minibatch (unbiased HSIC)",
               lambda a: minibatch_cka(a, "rbf"), f"rbf:rbf:unbiased:{RBF_THRESHOLD}"),
    MeasureRow("CKA linear, exact (all probe rows)", exact_cka, "exact:linear:exact", paper=99.3),
    MeasureRow("CKA linear, exact debiased", exact_debiased_cka,
               "exact_debiased:linear:exact_debiased"),
    MeasureRow(f"CKA RBF {RBF_THRESHOLD}, all probe rows (biased)", rbf_all_rows_cka,
               paper=99.1),
    MeasureRow("CCA R2_CCA", comparison_family, "cca_r2:cca_r2", "cca_r2"),
    MeasureRow("CCA rho-bar", comparison_family, "cca_mean_rho:cca_mean_rho",
               "cca_mean_rho", paper=1.4),
    MeasureRow("SVCCA", comparison_family, "svcca:svcca", "svcca"),
    MeasureRow("PWCCA", comparison_family, "pwcca:pwcca", "pwcca"),
    MeasureRow("linear regression R2(layer -> candidate)", comparison_family,
               "regression:regression_r2", "regression", paper=45.4),
    MeasureRow("linear regression R2(candidate -> layer)", comparison_family,
               "regression:regression_r2", "regression", transpose=True),
    MeasureRow("orthogonal Procrustes", comparison_family, "procrustes:procrustes",
               "procrustes"),
]


def ckad_measures() -> List[cka.Measure]:
    """Returns the distinct ckad measures of MEASURES that the client accepts."""
    out: Dict[str, cka.Measure] = {}
    for row in MEASURES:
        m = row.ckad_measure()
        if m is not None:
            out[m.name] = m
    return list(out.values())


# ---------------------------------------------------------------------------------------------
# The paper's layer matching, and blocks of near-identical layers.
# ---------------------------------------------------------------------------------------------


#: Values closer than this to a row's largest count as tied with it in matching_accuracy, so
#: that ckad's and NumPy's tables agree where their values agree: the comparison family is often
#: exactly 1 for several candidates (CCA's forced correlations at widths near the probe's rows),
#: and rounding (1e-12 here) must not pick among them.
TIE = 1e-9


def matching_accuracy(sim: np.ndarray, networks: int, layers: int) -> float:
    """Returns the share of (network a, layer i, network b != a) whose most similar layer of b
    (by `sim`, (networks * layers) square, stream a*layers + i; row = the layer, column = the
    candidate) is layer i. NaN never wins; a tie (within TIE of the largest) goes to the first
    layer."""
    right = total = 0
    for a in range(networks):
        for b in range(networks):
            if a == b:
                continue
            block = sim[a * layers:(a + 1) * layers, b * layers:(b + 1) * layers]
            block = np.where(np.isnan(block), -np.inf, block)
            best = np.argmax(block >= np.max(block, axis=1, keepdims=True) - TIE, axis=1)
            right += int(np.sum(best == np.arange(layers)))
            total += layers
    return right / total


def blocks(sim: np.ndarray, threshold: float) -> List[Tuple[int, int]]:
    """Returns the maximal runs [first, last] (first < last) of consecutive layers of one
    network whose pairwise values in `sim` (layers x layers, in layer order) all exceed
    `threshold`."""
    n = len(sim)
    runs = []
    for first in range(n):
        last = first
        while last + 1 < n and np.all(sim[first:last + 2, last + 1] > threshold):
            last += 1
        if last > first and not (runs and runs[-1][1] >= last):
            runs.append((first, last))
    return runs


# ---------------------------------------------------------------------------------------------
# The report.
# ---------------------------------------------------------------------------------------------


def percent(x: float) -> str:
    return f"{100.0 * x:5.1f} %"


def compare(address: str, session_id: str, streams: List[str], acts: List[np.ndarray],
            networks: int, layers: int) -> Tuple[List[str], bool]:
    """Returns the table's lines and whether every ckad CKA value is within TOLERANCE of
    NumPy's."""
    served = set()
    with cka.Client(address) as client:
        info = client.get_session(session_id)
        served = {m.name for m in info.measures}
        ckad_values: Dict[str, np.ndarray] = {}
        for name in served:
            m = client.similarity(session_id, measure=name, rows=streams, cols=streams,
                                  timeout=120)
            ckad_values[name] = m.values
    width = max(len(r.label) for r in MEASURES)
    lines = [f"{'measure':<{width}}  {'ckad':>16}  {'NumPy':>7}  {'max |ckad-NumPy|':>16}  "
             "paper (CIFAR-10)"]
    agree = True
    numpy_cache: Dict[Callable, object] = {}
    for row in MEASURES:
        ref = row.matrix(acts, numpy_cache)
        ours = ref.T if row.transpose else ref
        measure = row.ckad_measure()
        if measure is not None and measure.name in served:
            theirs = ckad_values[measure.name]
            same_nan = bool(np.array_equal(np.isnan(theirs), np.isnan(ref)))
            both = ~np.isnan(theirs) & ~np.isnan(ref)
            diff = float(np.max(np.abs(theirs - ref)[both], initial=0.0))
            ok = diff <= TOLERANCE and same_nan
            agree &= ok
            ckad_cell = percent(matching_accuracy(theirs.T if row.transpose else theirs,
                                                  networks, layers))
            diff_cell = f"{diff:.1e}" + ("" if ok else " FAIL")
        else:
            ckad_cell, diff_cell = ("not in ckad yet" if row.ckad else "not a ckad query",
                                    "-")
        paper = f"{row.paper:.1f} %" if row.paper is not None else ""
        lines.append(f"{row.label:<{width}}  {ckad_cell:>16}  "
                     f"{percent(matching_accuracy(ours, networks, layers))}  "
                     f"{diff_cell:>16}  {paper}")
    return lines, agree


def block_report(address: str, session_id: str, names: Sequence[str], run: Run,
                 threshold: float) -> List[str]:
    """Returns, per network, the blocks of ckad's exact linear CKA within it."""
    lines = []
    layers = run.layers
    with cka.Client(address) as client:
        for s in names:
            streams = [f"{s}/{layer}" for layer in layers]
            m = client.similarity(session_id, measure="exact", rows=streams, cols=streams)
            runs = blocks(m.values, threshold)
            largest = max((last - first + 1 for first, last in runs), default=1)
            shown = ", ".join(f"{layers[a]}-{layers[b]}" for a, b in runs) or "none"
            lines.append(f"  {s}: largest block {largest} of {len(layers)} layers "
                         f"({100.0 * largest / len(layers):.0f} %); blocks {shown}")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--quick", action="store_true",
                        help="3 small networks and 1 deep one, 150 steps, a probe of 2 x 32, "
                        "4 workers")
    parser.add_argument("--networks", type=int, default=10)
    parser.add_argument("--convs", default="8,16,32", help="channels of the conv layers")
    parser.add_argument("--depth", type=int, default=2, help="fc layers after the convs")
    parser.add_argument("--width", type=int, default=64, help="units of each fc layer")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--probe-batches", type=int, default=6)
    parser.add_argument("--probe-size", type=int, default=100)
    parser.add_argument("--deep-networks", type=int, default=3)
    parser.add_argument("--deep-depth", type=int, default=20,
                        help="fc layers of the deeper variant")
    parser.add_argument("--threshold", type=float, default=0.9,
                        help="CKA above which consecutive layers form a block")
    parser.add_argument("--workers", type=int, default=2, help="networks training at once")
    parser.add_argument("--out-dir", help="where the activations go (default: a temporary "
                        "directory, removed at the end)")
    parser.add_argument("--session", default=f"layer-matching-{uuid.uuid4().hex[:8]}")
    args = parser.parse_args(argv)
    if args.quick:
        args.networks, args.convs, args.depth, args.width, args.steps = 3, "2,4", 1, 16, 150
        args.probe_batches, args.probe_size = 2, 32
        args.deep_networks, args.deep_depth = 1, 5
        args.workers = 4  # all at once: their time goes mostly to importing torch
    convs = tuple(int(c) for c in args.convs.split(",") if c)
    run = Run(convs, args.depth, args.width, args.steps, args.probe_batches, args.probe_size)
    deep = dataclasses.replace(run, depth=args.deep_depth)
    names = sources("net", args.networks)
    deep_names = sources("deep", args.deep_networks)
    deep_session = args.session + "-deep"

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out_dir or tmp
        os.makedirs(out_dir, exist_ok=True)
        # The deeper variant: only exact linear CKA, since a layer whose units all died has
        # no RBF bandwidth (an error).
        groups = [Group(args.session, ckad_measures(), names, run)]
        if deep_names:
            groups.append(Group(deep_session, [cka.Measure("exact", "linear", "exact")],
                                deep_names, deep))
        results = train_all(args.address, groups, out_dir, args.workers)
        for s, r in results.items():
            print(f"{s}: loss {r['loss']:.3f}, probe accuracy {percent(r['accuracy'])}, "
                  f"{r['acked']} batches acked")
        streams, acts = load(out_dir, names, run)

    print(f"\nLayer matching (Kornblith et al. 2019, Table 2): {args.networks} networks, "
          f"{run.describe()}, on sklearn's digits, {args.steps} Adam steps each; "
          f"{args.probe_batches * args.probe_size} held-out probe rows in {args.probe_batches} "
          f"batches of {args.probe_size}; ckad session {args.session}")
    lines, agree = compare(args.address, args.session, streams, acts, args.networks,
                           len(run.layers))
    print("\n".join(lines))
    print(f"\nBlocks: maximal runs of consecutive layers whose pairwise exact linear CKA "
          f"(ckad's) all exceed {args.threshold}")
    print(f" {args.networks} networks, {run.describe()}:")
    print("\n".join(block_report(args.address, args.session, names, run, args.threshold)))
    if deep_names:
        print(f" the deeper variant, {deep.describe()}:")
        print("\n".join(block_report(args.address, deep_session, deep_names, deep,
                                     args.threshold)))
    if not agree:
        print(f"ckad and NumPy differ by more than {TOLERANCE} on a measure",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
