"""Two small CNNs (different seeds) train for a few hundred steps on scikit-learn's bundled
digits in two separate processes (spawned), each streaming its layers through cka.torch hooks
into one session of a real ckad. The session's whole matrix (cross-model and within-model)
equals the float64 NumPy oracle of the activations each process recorded with the test's own
forward hooks, with activations and with Gram reduction on the tensor's device. Also runs
client/python/examples/two_models.py as README.md shows it, and checks that README's excerpt
of it is still in the file."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from typing import Dict

import numpy as np
import pytest

from conftest import ROOT, require
from oracle import minibatch_cka

torch = require("torch")
require("sklearn")
EXAMPLE = os.path.join(ROOT, "client", "python", "examples", "two_models.py")
sys.path.insert(0, os.path.dirname(EXAMPLE))  # spawned workers inherit sys.path
import two_models  # noqa: E402

STEPS, EVERY = 300, 5
TRACKED = list(range(0, STEPS, EVERY))


def recorded_job(address: str, session_id: str, source: str, *, out_dir: str, every: int,
                 **options) -> Dict:
    """Runs in a worker process: two_models.train on the source's model, with the test's own
    forward hooks saving what the tracked passes' layers output (float32) to
    out_dir/<source>.npz under "<pass>/<layer>". The pass counter is the test's, not the
    step of cka.torch, so that a batch id that does not line up shows."""
    model = two_models.small_cnn(two_models.SOURCES[source])
    passes = [0]
    saved: Dict[str, np.ndarray] = {}

    def record(layer: str):
        def hook(module, inputs, output) -> None:
            if passes[0] % every == 0:
                saved[f"{passes[0]}/{layer}"] = output.detach().numpy().copy()
        return hook

    for layer in two_models.LAYERS:
        model.get_submodule(layer).register_forward_hook(record(layer))
    model.register_forward_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))
    result = two_models.train(model, address, session_id, source, every=every, **options)
    np.savez(os.path.join(out_dir, f"{source}.npz"), **saved)
    result["passes"] = passes[0]
    return result


@pytest.mark.parametrize("reduce_on_device", [False, True], ids=["activations", "gram"])
def test_two_processes_train_on_digits_and_equal_the_float64_oracle(
        ckad, client, session_id, tmp_path, reduce_on_device):
    job = functools.partial(recorded_job, out_dir=str(tmp_path), every=EVERY)
    results = two_models.run_jobs(ckad.address, session_id, job=job, steps=STEPS,
                                  reduce_on_device=reduce_on_device)
    for source, result in results.items():
        print(f"{source}: {result}")
        stats = result["stats"]
        assert result["passes"] == STEPS
        assert (stats.submitted, stats.acked, stats.rejected) == (len(TRACKED),) * 2 + (0,)
        # conv1 (d 288) and conv2 (d 256) have more columns than the 64 rows; fc (d 10) not.
        assert result["gram_layers"] == (2 * len(TRACKED) if reduce_on_device else 0)
        assert stats.gram_reduced_layers == result["gram_layers"]  # CPU: the streamer's thread
        assert result["loss"] < 1.0, "it did not train (the loss starts near ln 10 = 2.3)"

    recorded = {source: np.load(tmp_path / f"{source}.npz") for source in results}
    batches = []
    for step in TRACKED:
        batches.append({f"{source}/{layer}": recorded[source][f"{step}/{layer}"]
                        for source in results for layer in two_models.LAYERS})
    assert all(len(r.files) == len(TRACKED) * len(two_models.LAYERS) for r in recorded.values())

    m = client.similarity(session_id)
    assert sorted(m.rows) == sorted(two_models.streams())
    expected, counts = minibatch_cka(m.rows, batches)
    print(m.rows, np.array2string(m.values, precision=4), sep="\n")
    # 1e-6: the service's contract for float32 input against a float64 oracle.
    np.testing.assert_allclose(m.values, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(m.batches, counts)
    assert (counts == len(TRACKED)).all()
    cross = m.values[m.rows.index("a/conv2"), m.cols.index("b/conv2")]
    assert 0.2 < cross < 0.999, "two differently seeded models should be similar, not equal"
    info = client.get_session(session_id)
    assert info.batches_applied == 2 * len(TRACKED)
    assert info.pairs_missed == 0 and info.batches_pending == 0
    client.delete_session(session_id)


def test_the_example_runs_as_the_readme_shows(ckad, client, session_id, tmp_path):
    require("matplotlib")
    png = tmp_path / "cka.png"
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), env.get("PYTHONPATH")) if p)
    run = subprocess.run(
        [sys.executable, EXAMPLE, "--address", ckad.address, "--session", session_id,
         "--steps", "60", "--every", "10", "--png", str(png)],
        capture_output=True, text=True, timeout=300)
    print(run.stdout, run.stderr)
    assert run.returncode == 0
    assert "a: loss" in run.stdout and "b: loss" in run.stdout
    m = client.similarity(session_id, rows=["a/conv1", "a/conv2", "a/fc"],
                          cols=["b/conv1", "b/conv2", "b/fc"])
    assert (m.batches == 6).all()  # steps 0, 10, ..., 50
    assert np.array2string(m.values, precision=3) in run.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client.delete_session(session_id)


def test_the_readme_excerpt_is_in_the_example():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    blocks = re.findall(r"```python\n# client/python/examples/two_models.py.*?\n(.*?)```",
                        readme, re.S)
    assert blocks, "README.md has no excerpt of client/python/examples/two_models.py"
    with open(EXAMPLE) as f:
        example = {line.strip() for line in f}
    for block in blocks:
        for line in block.splitlines():
            if line.strip() and line.strip() != "...":
                assert line.strip() in example, f"README.md's line is not in the example: {line}"
