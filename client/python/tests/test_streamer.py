"""cka.Streamer against a real ckad: two sources into one session equal the float64 oracle,
with and without client-side Gram reduction; bad input comes back as records while the
stream lives on; the queue policies."""

import os
import threading

import grpc
import numpy as np
import pytest

import cka
from oracle import minibatch_cka

LAYERS = ("conv", "fc", "h16", "f64")


def make_batches(seed: int, sources, count: int):
    """Per batch: (n, {source: {layer: array}}); float32 conv maps (n, 4, 4, 4) and fc (n, 16),
    float16 (n, 96) and float64 (n, 40), all sharing a component per batch so that CKA values
    are far from 0 and a wrong count shows."""
    rng = np.random.default_rng(seed)
    weights = {s: [rng.standard_normal((8, w)) for w in (64, 16, 96, 40)] for s in sources}
    batches = []
    for _ in range(count):
        n = int(rng.integers(20, 37))
        z = rng.standard_normal((n, 8))
        per_source = {}
        for s in sources:
            w = weights[s]
            conv = np.maximum(0, z @ w[0] + 0.5 * rng.standard_normal((n, 64)))
            per_source[s] = {
                "conv": conv.reshape(n, 4, 4, 4).astype(np.float32),
                "fc": np.tanh(z @ w[1]).astype(np.float32),
                "h16": (z @ w[2] + rng.standard_normal((n, 96))).astype(np.float16),
                "f64": z @ w[3] + 0.1 * rng.standard_normal((n, 40)),
            }
        batches.append((n, per_source))
    return batches


def seed_for(name: str) -> int:
    seed = int(os.environ.get("CKA_PY_SEED", np.random.SeedSequence().entropy % 2**31))
    print(f"{name}: seed {seed} (replay with CKA_PY_SEED={seed})")
    return seed


def oracle_for(matrix: cka.SimilarityMatrix, batches):
    assert matrix.rows == matrix.cols
    flat = [{f"{s}/{l}": a for s, layers in per.items() for l, a in layers.items()}
            for _, per in batches]
    return minibatch_cka(matrix.rows, flat)


@pytest.mark.parametrize("reduce_to_gram", [False, True], ids=["activations", "gram"])
def test_two_sources_equal_the_float64_oracle(client, session_id, reduce_to_gram):
    seed = seed_for("two_sources")
    sources = ("a", "b")
    streams = [f"{s}/{l}" for s in sources for l in LAYERS]
    client.create_session(session_id, streams=streams, step_bucket=10)
    batches = make_batches(seed, sources, 8)
    streamers = {s: cka.Streamer(client, session_id, s, reduce_to_gram=reduce_to_gram)
                 for s in sources}
    for b, (n, per_source) in enumerate(batches):
        for s in sources:
            assert streamers[s].submit(f"batch-{b}", 5 * b, per_source[s]) is True
    for s in sources:
        assert streamers[s].close(timeout=60) == []
        stats = streamers[s].stats
        assert (stats.submitted, stats.acked, stats.rejected) == (8, 8, 0)
        # conv (d 64 > n), h16 (2-byte values, 2n < d = 96) and f64 (d 40 > n) shrink; fc
        # (d 16 < n) does not.
        assert stats.gram_reduced_layers == (24 if reduce_to_gram else 0)

    m = client.similarity(session_id)
    assert sorted(m.rows) == sorted(streams)
    expected, counts = oracle_for(m, batches)
    # 1e-6: the contract of the service for float32 input against a float64 oracle.
    np.testing.assert_allclose(m.values, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(m.batches, counts)
    assert (counts == 8).all()
    info = client.get_session(session_id)
    assert info.pairs_missed == 0 and info.batches_pending == 0
    # Step range: batches 0 and 1 (steps 0 and 5) are bucket 0.
    first = client.similarity(session_id, step_min=0, step_max=9)
    expected_first, _ = oracle_for(first, batches[:2])
    np.testing.assert_allclose(first.values, expected_first, rtol=0, atol=1e-6)
    assert (first.batches == 2).all()
    client.delete_session(session_id)


def test_bad_input_comes_back_as_records_and_the_stream_lives_on(client, session_id):
    client.create_session(session_id)
    rng = np.random.default_rng(3)
    good = lambda n=8: {"x": rng.standard_normal((n, 4)).astype(np.float32)}  # noqa: E731
    nan = good()
    nan["x"][2, 1] = np.nan
    with cka.Streamer(client, session_id, "s") as streamer:
        streamer.submit("good-0", 0, good())
        streamer.submit("nan", 1, nan)
        streamer.submit("rows", 2, {"x": good(8)["x"], "y": good(7)["x"]})
        streamer.submit("small", 3, good(3))
        streamer.submit("good-1", 4, good())
        errors = streamer.flush(timeout=30)
        assert [e.batch_id for e in errors] == ["nan", "rows", "small"]
        assert all(e.code == grpc.StatusCode.INVALID_ARGUMENT for e in errors)
        print("\n".join(e.message for e in errors))
        assert "'s/x'" in errors[0].message and "nan at row 2, column 1" in errors[0].message
        assert "'s/y'" in errors[1].message and "7 rows" in errors[1].message
        assert "8 rows" in errors[1].message
        assert "3 examples" in errors[2].message and "at least 4" in errors[2].message
        stats = streamer.stats
        assert (stats.acked, stats.rejected, stats.reconnects) == (2, 3, 0)

        # Refused before anything is queued: CkaError naming the batch, the layer, the value.
        for layers, needle in (({"x": np.ones(8, np.float32)}, "shape [8]"),
                               ({"x": np.ones((8, 4), np.int64)}, "int64"),
                               ({"x": np.ones((8, 0), np.float32)}, "shape [8, 0]"),
                               ({}, "no layers")):
            with pytest.raises(cka.CkaError) as error:
                streamer.submit("client-side", 5, layers)
            assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert needle in error.value.message and "client-side" in error.value.message
        with pytest.raises(cka.CkaError) as error:
            streamer.submit("gram", 5, {}, grams={"k": np.ones((4, 5))})
        assert "[4, 5]" in error.value.message
    assert streamer.rejected == []
    with pytest.raises(cka.CkaError) as error:
        streamer.submit("late", 6, good())
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert client.get_session(session_id).batches_applied == 2


def test_unknown_session_is_a_record_and_the_same_stream_then_delivers(client, session_id):
    rng = np.random.default_rng(4)
    streamer = cka.Streamer(client, session_id, "s")
    streamer.submit("early", 0, {"x": rng.standard_normal((8, 4))})
    [error] = streamer.flush(timeout=30)
    assert error.batch_id == "early" and error.code == grpc.StatusCode.NOT_FOUND
    assert session_id in error.message
    client.create_session(session_id)
    streamer.submit("later", 1, {"x": rng.standard_normal((8, 4))})
    assert streamer.close(timeout=30) == []
    assert streamer.stats.reconnects == 0 and streamer.stats.acked == 1
    assert client.get_session(session_id).batches_applied == 1
    client.delete_session(session_id)


def test_gram_payloads_from_the_caller(client, session_id):
    client.create_session(session_id, streams=["g/x", "g/y"])
    rng = np.random.default_rng(5)
    batches = []
    with cka.Streamer(client, session_id, "g") as streamer:
        for b in range(4):
            x = rng.standard_normal((12, 30))
            y = x[:, :10] + 0.3 * rng.standard_normal((12, 10))
            batches.append((12, {"g": {"x": x, "y": y}}))
            streamer.submit(b, 0, {"y": y}, grams={"x": x @ x.T})
    assert streamer.rejected == []
    m = client.similarity(session_id)
    expected, _ = oracle_for(m, batches)
    np.testing.assert_allclose(m.values, expected, rtol=0, atol=1e-9)
    client.delete_session(session_id)


def test_drop_and_count_drops_when_the_queue_is_full(free_port):
    # Nothing listens: batches stay outstanding (one in flight, the rest queued).
    with cka.Client(f"127.0.0.1:{free_port}") as dead:
        streamer = cka.Streamer(dead, "s", "a", policy="drop_and_count", max_queue_batches=2,
                                max_in_flight=1)
        queued = [streamer.submit(b, 0, {"x": np.ones((8, 4))}) for b in range(10)]
        stats = streamer.stats
        assert queued.count(False) == stats.dropped >= 5
        assert stats.submitted + stats.dropped == 10
        with pytest.raises(cka.CkaError) as error:
            streamer.close(timeout=0.2)
        assert error.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "not acked" in error.value.message


def test_block_waits_for_room_and_close_releases_it(free_port):
    with cka.Client(f"127.0.0.1:{free_port}") as dead:
        streamer = cka.Streamer(dead, "s", "a", max_queue_batches=1, max_in_flight=1)
        outcome = []

        def submit_many():
            try:
                for b in range(10):
                    streamer.submit(b, 0, {"x": np.ones((8, 4))})
                outcome.append("all queued")
            except cka.CkaError as error:
                outcome.append(error.code)

        thread = threading.Thread(target=submit_many)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "submit did not block on a full queue"
        with pytest.raises(cka.CkaError):
            streamer.close(timeout=0.1)
        thread.join(10)
        assert outcome == [grpc.StatusCode.FAILED_PRECONDITION]


def test_streamer_arguments(client):
    for kwargs in ({"policy": "drop_oldest"}, {"max_in_flight": 0},
                   {"initial_backoff": 0}, {"max_backoff": 0.01}):
        with pytest.raises(cka.CkaError) as error:
            cka.Streamer(client, "s", "a", **kwargs)
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(cka.CkaError):
        cka.Streamer(client, "", "a")


def test_a_tensor_changed_in_place_before_encoding_is_a_record_not_sent(client, session_id):
    """submit keeps a reference to a CPU tensor; the background thread checks torch's in-place
    counter after reading it. While the test holds the streamer's lock (reentrant: submit takes
    it too) the background thread cannot take the batch, so the change lands before encoding."""
    from conftest import import_torch

    torch = import_torch()
    client.create_session(session_id)
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((8, 4)))
    with cka.Streamer(client, session_id, "t") as streamer:
        with streamer._cv:
            streamer.submit("changed", 0, {"x": x})
            streamer.submit("copied", 1, {"x": x}, copy=True)
            x.mul_(2)
        [error] = streamer.flush(timeout=30)
        streamer.submit("unchanged", 2, {"x": x})
    assert error.batch_id == "changed" and error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "layer 'x'" in error.message and "in place" in error.message
    assert streamer.rejected == []
    assert streamer.stats.acked == 2 and streamer.stats.reconnects == 0
    assert client.get_session(session_id).batches_applied == 2
    client.delete_session(session_id)


def test_gram_reduction_keeps_the_contract_on_activations_far_from_zero(client, session_id):
    """A mean 30 x the spread (ReLU maps, biases): ckad centres the Gram, so the client's
    rounding is magnified by the cancellation. Accumulating X X^T in float64 keeps the matrix
    within 1e-6 of the float64 oracle (~1e-7 off: the float32 wire's rounding); float32
    products accumulated per 4096 columns were 1.2e-6 to 2.9e-6 off (seeds 4-6)."""
    seed = seed_for("offset_gram")
    rng = np.random.default_rng(seed)
    client.create_session(session_id, streams=["a/x", "a/y"])
    batches = []
    with cka.Streamer(client, session_id, "a", reduce_to_gram=True) as streamer:
        for b in range(6):
            z = rng.standard_normal((32, 8))
            x = 30 + z @ rng.standard_normal((8, 2048)) + rng.standard_normal((32, 2048))
            y = 30 + np.tanh(z @ rng.standard_normal((8, 1024)))
            batch = {"x": x.astype(np.float32), "y": y.astype(np.float32)}
            batches.append((32, {"a": batch}))
            streamer.submit(b, b, batch)
    assert streamer.rejected == [] and streamer.stats.gram_reduced_layers == 12
    m = client.similarity(session_id)
    expected, _ = oracle_for(m, batches)
    np.testing.assert_allclose(m.values, expected, rtol=0, atol=1e-6)
    client.delete_session(session_id)


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["float32", "float16"])
def test_a_non_finite_value_in_a_reduced_layer_names_its_example(client, session_id, dtype):
    """With reduce_to_gram, an Inf at example 5 would turn row 0 of the Gram non-finite too;
    the record names the activations' row and column, as ckad names them for activations,
    and the batch is not sent; the next batch is."""
    client.create_session(session_id)
    x = np.arange(8 * 50, dtype=dtype).reshape(8, 50) / 400
    bad = x.copy()
    bad[5, 7] = np.inf
    with cka.Streamer(client, session_id, "m", reduce_to_gram=True) as streamer:
        assert streamer.gram_allowed() is True  # the default measure takes Grams
        streamer.submit("bad", 0, {"l": bad})
        streamer.submit("good", 1, {"l": x})
        [error] = streamer.flush(timeout=30)
    assert error.batch_id == "bad" and error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == ("layer 'm/l' batch 'bad': value inf at row 5, column 7 is not "
                             "finite (NaN or Inf)")
    assert streamer.stats.acked == 1 and streamer.stats.gram_reduced_layers == 1
    client.delete_session(session_id)


def test_gram_allowed_is_unknown_for_a_session_not_created_yet(client, session_id):
    with cka.Streamer(client, session_id, "m") as streamer:
        assert streamer.gram_allowed() is None  # NOT_FOUND is not raised
        client.create_session(session_id, measures=["ex:linear:exact"], streams=["m/l"])
        assert streamer.gram_allowed() is False  # asked again: the answer is kept
        client.delete_session(session_id)
        assert streamer.gram_allowed() is False
