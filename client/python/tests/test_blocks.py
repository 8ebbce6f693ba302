"""Block structure through cka.Client: similarity(..., block_threshold=) against NumPy."""

from typing import List, Tuple

import grpc
import numpy as np
import pytest

import cka
from oracle import minibatch_cka


def blocks_by_the_rule(values: np.ndarray, threshold: float) -> List[Tuple[int, int]]:
    """Returns (first, length) of each block of one source's n x n `values`.

    core/MATH.md, "Block structure", read literally: every candidate interval checked pair by
    pair, then the longest (earliest on ties) not overlapping any taken, repeatedly.
    """
    n = values.shape[0]
    alike = (values > threshold) & (values.T > threshold)
    taken = np.zeros(n, dtype=bool)
    out = []
    while True:
        best = None
        for first in range(n):
            for last in range(first + 1, n):
                inside = alike[first:last + 1, first:last + 1] | np.eye(last - first + 1, dtype=bool)
                if taken[first:last + 1].any() or not inside.all():
                    continue
                if best is None or last - first + 1 > best[1]:
                    best = (first, last - first + 1)
        if best is None:
            return sorted(out)
        taken[best[0]:best[0] + best[1]] = True
        out.append(best)


def test_blocks_equal_the_rule_on_the_numpy_matrix(client, session_id):
    # Model "deep": l1..l4 noisy copies of one signal, l0 and l5 independent; "flat": 2
    # independent layers. Declared streams fix the order.
    deep = [f"deep/l{i}" for i in range(6)]
    flat = ["flat/a", "flat/b"]
    client.create_session(session_id, streams=deep + flat)
    seed = 20261206
    print("seed", seed)
    rng = np.random.default_rng(seed)
    batches = []
    with cka.Streamer(client, session_id, "deep") as d, \
            cka.Streamer(client, session_id, "flat") as f:
        for b in range(3):
            signal = rng.standard_normal((24, 6))
            layers = {}
            for i in range(6):
                noise = rng.standard_normal((24, 6))
                layers[f"l{i}"] = signal + 0.05 * noise if 1 <= i <= 4 else noise
            flat_layers = {"a": rng.standard_normal((24, 6)), "b": rng.standard_normal((24, 6))}
            d.submit(b, 0, layers)
            f.submit(b, 0, flat_layers)
            batch = {f"deep/{k}": v for k, v in layers.items()}
            batch.update({f"flat/{k}": v for k, v in flat_layers.items()})
            batches.append(batch)
    assert d.rejected == [] and f.rejected == []

    m = client.similarity(session_id, rows=["flat/a"], cols=["deep/l0"], block_threshold=0.9)
    assert m.values.shape == (1, 1)
    values, _ = minibatch_cka(deep, batches)
    want = blocks_by_the_rule(values, 0.9)
    assert want == [(1, 4)]
    assert len(m.blocks) == 1
    block = m.blocks[0]
    assert isinstance(block, cka.LayerBlock)
    assert (block.source, block.first_stream, block.last_stream) == ("deep", "deep/l1", "deep/l4")
    assert (block.first_layer, block.length, block.source_layers) == (1, 4, 6)
    assert block.warning  # 4 of 6 layers
    inside = values[1:5, 1:5][~np.eye(4, dtype=bool)]
    # float64 sums in another order: 1e-10 relative.
    np.testing.assert_allclose(block.mean_value, inside.mean(), rtol=1e-10)
    np.testing.assert_allclose(block.min_value, inside.min(), rtol=1e-10)

    assert not client.similarity(session_id, block_threshold=0.9,
                                 block_warn_share=0.7).blocks[0].warning
    assert client.similarity(session_id).blocks == ()
    for threshold, share, says in [(0.0, None, "block_threshold 0"),
                                   (1.5, None, "block_threshold 1.5"),
                                   (0.9, 0.0, "block_warn_share 0")]:
        with pytest.raises(cka.CkaError) as error:
            client.similarity(session_id, block_threshold=threshold, block_warn_share=share)
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert says in error.value.message
    client.delete_session(session_id)
