"""cka.Client against a real ckad: sessions, queries, watches, health and errors."""

import grpc
import numpy as np
import pytest

import cka
from oracle import minibatch_cka_standard_error


def test_create_get_list_delete(client, session_id):
    measures = ["lin:linear:unbiased", cka.Measure("rbf", "rbf", "biased", 0.5)]
    streams = ["a/conv1", "a/fc", "b/conv1", "b/fc"]
    created = client.create_session(session_id, measures=measures, streams=streams,
                                    step_bucket=100)
    assert created.session_id == session_id
    assert created.measures == (cka.Measure("lin", "linear", "unbiased", 0.0),
                                cka.Measure("rbf", "rbf", "biased", 0.5))
    assert created.declared_streams == tuple(streams)
    assert created.step_bucket == 100

    got = client.get_session(session_id)
    assert got == created  # dataclass equality ignores the proto field
    assert got.batches_applied == 0 and got.pairs_missed == 0
    assert session_id in [s.session_id for s in client.list_sessions()]

    # Idempotent for the same config; ALREADY_EXISTS for another.
    assert client.create_session(session_id, measures=measures, streams=streams,
                                 step_bucket=100).session_id == session_id
    with pytest.raises(cka.CkaError) as error:
        client.create_session(session_id, step_bucket=7)
    assert error.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert session_id in error.value.message

    client.delete_session(session_id)
    assert session_id not in [s.session_id for s in client.list_sessions()]
    for call in (lambda: client.get_session(session_id),
                 lambda: client.delete_session(session_id),
                 lambda: client.similarity(session_id)):
        with pytest.raises(cka.CkaError) as error:
            call()
        assert error.value.code == grpc.StatusCode.NOT_FOUND
        assert session_id in error.value.message


def test_expected_sources_and_join_window_round_trip(client, session_id):
    created = client.create_session(session_id, expected_sources=["a", "b"], join_window=64)
    assert created.expected_sources == ("a", "b")
    assert created.join_window == 64
    assert created.measures == (cka.Measure("linear"),)  # none given: the server's default
    client.delete_session(session_id)


def test_bad_config_is_invalid_argument_naming_the_field(client, session_id):
    with pytest.raises(cka.CkaError) as error:
        client.create_session(session_id, streams=["a/x"], join_window=8)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "join_window" in error.value.message
    with pytest.raises(cka.CkaError) as error:
        cka.Measure.parse("lin:cosine")
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(cka.CkaError) as error:
        client.create_session(session_id, measures=["lin:cosine"])
    assert "cosine" in error.value.message


def test_similarity_and_watch_return_labelled_numpy_arrays(client, session_id):
    client.create_session(session_id, streams=["m/x", "m/y"])
    rng = np.random.default_rng(1)
    with cka.Streamer(client, session_id, "m") as streamer:
        for b in range(3):
            x = rng.standard_normal((16, 8)).astype(np.float32)
            streamer.submit(b, b, {"x": x, "y": x + 0.1 * rng.standard_normal((16, 8))})
    assert streamer.rejected == []

    m = client.similarity(session_id)
    assert m.rows == ["m/x", "m/y"] and m.cols == ["m/x", "m/y"]
    assert m.values.dtype == np.float64 and m.values.shape == (2, 2)
    assert m.batches.dtype == np.int64 and (m.batches == 3).all()
    np.testing.assert_allclose(np.diag(m.values), 1.0, atol=1e-9)
    assert 0.5 < m.values[0, 1] < 1.0
    assert m.server_time_ms is not None and m.server_time_ms >= 0

    sub = client.similarity(session_id, rows=["m/x"], cols=["m/y"])
    assert sub.values.shape == (1, 1) and sub.values[0, 0] == m.values[0, 1]
    with pytest.raises(cka.CkaError) as error:
        client.similarity(session_id, measure="nope")
    assert error.value.code == grpc.StatusCode.NOT_FOUND and "nope" in error.value.message

    with client.watch(session_id, min_interval=0.05, timeout=30) as watch:
        first = next(watch)
        np.testing.assert_array_equal(first.values, m.values)
        watch.cancel()
        assert list(watch) == []  # a cancelled watch ends quietly

    # A watch that runs its course is not an error.
    assert len(list(client.watch(session_id, timeout=0.5))) >= 1
    with pytest.raises(cka.CkaError) as error:
        next(client.watch("no-such-session", timeout=10))
    assert error.value.code == grpc.StatusCode.NOT_FOUND
    client.delete_session(session_id)


def test_similarity_series_equals_a_range_query_per_bucket(client, session_id):
    client.create_session(session_id, streams=["a/x", "a/y", "b/x"], step_bucket=10)
    seed = 5
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    steps = [0, 3, 12, 25, 27, 29]  # buckets 0-9, 10-19, 20-29
    with cka.Streamer(client, session_id, "a") as a, cka.Streamer(client, session_id, "b") as b:
        for i, step in enumerate(steps):
            x = rng.standard_normal((12, 6)).astype(np.float32)
            a.submit(i, step, {"x": x, "y": np.tanh(x @ rng.standard_normal((6, 5)))})
            if step != 12:  # bucket 10-19 has no batch of b
                b.submit(i, step, {"x": x + rng.standard_normal((12, 6)).astype(np.float32)})
    assert a.rejected == [] and b.rejected == []

    pairs = [("a/x", "b/x"), ("a/x", "a/y")]
    series = client.similarity_series(session_id, pairs)
    assert series.pairs == pairs and series.step_bucket == 10
    np.testing.assert_array_equal(series.step_first, [0, 10, 20])
    np.testing.assert_array_equal(series.step_last, [9, 19, 29])
    assert series.values.shape == (3, 2) and series.batches.dtype == np.int64
    for i, (first, last) in enumerate(zip(series.step_first, series.step_last)):
        for j, (row, col) in enumerate(pairs):
            m = client.similarity(session_id, rows=[row], cols=[col],
                                  step_min=int(first), step_max=int(last))
            # The same sums divided the same way: equal to the last bit, NaN included.
            np.testing.assert_array_equal(series.values[i, j], m.values[0, 0])
            assert series.batches[i, j] == m.batches[0, 0]
    assert np.isnan(series.values[1, 0]) and series.batches[1, 0] == 0
    assert list(series.batches[:, 1]) == [2, 1, 3]

    for pairs, code in (([], grpc.StatusCode.INVALID_ARGUMENT),
                        ([("a/x", "c/x")], grpc.StatusCode.NOT_FOUND)):
        with pytest.raises(cka.CkaError) as error:
            client.similarity_series(session_id, pairs)
        assert error.value.code == code and error.value.message
    client.delete_session(session_id)


def test_standard_errors_equal_the_numpy_delta_method(client, session_id):
    client.create_session(session_id, measures=["lin:linear:unbiased"],
                          streams=["m/x", "m/y"], step_bucket=10)
    seed = 7
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    steps = [0, 3, 6, 12, 15, 18]  # buckets 0-9 and 10-19
    batches = []
    with cka.Streamer(client, session_id, "m") as streamer:
        for i, step in enumerate(steps):
            x = rng.standard_normal((12, 6))  # float64: float64 Grams on both sides
            y = np.tanh(x @ rng.standard_normal((6, 4))) + 0.5 * rng.standard_normal((12, 4))
            streamer.submit(i, step, {"x": x, "y": y})
            batches.append({"m/x": x, "m/y": y})
    assert streamer.rejected == []

    m = client.similarity(session_id)
    assert m.standard_errors.dtype == np.float64 and m.standard_errors.shape == (2, 2)
    want = minibatch_cka_standard_error("m/x", "m/y", batches)
    assert want > 0
    # The service takes covariances from raw sums: a few digits go to cancellation.
    np.testing.assert_allclose(m.standard_errors[0, 1], want, rtol=1e-6)
    np.testing.assert_allclose(m.standard_errors[1, 0], want, rtol=1e-6)

    series = client.similarity_series(session_id, [("m/x", "m/y")])
    assert series.standard_errors.shape == (2, 1)
    for i, (first, last) in enumerate(zip(series.step_first, series.step_last)):
        r = client.similarity(session_id, rows=["m/x"], cols=["m/y"],
                              step_min=int(first), step_max=int(last))
        np.testing.assert_array_equal(series.standard_errors[i, 0], r.standard_errors[0, 0])
        bucket = [b for b, step in zip(batches, steps) if first <= step <= last]
        np.testing.assert_allclose(series.standard_errors[i, 0],
                                   minibatch_cka_standard_error("m/x", "m/y", bucket),
                                   rtol=1e-6)
    client.delete_session(session_id)


def test_no_value_is_nan_with_zero_batches(client, session_id):
    client.create_session(session_id)
    rng = np.random.default_rng(2)
    with cka.Streamer(client, session_id, "a") as streamer:
        streamer.submit("only-a", 0, {"x": rng.standard_normal((8, 4))})
    with cka.Streamer(client, session_id, "b") as streamer:
        streamer.submit("only-b", 0, {"x": rng.standard_normal((8, 4))})
    m = client.similarity(session_id, rows=["a/x"], cols=["b/x"])
    assert np.isnan(m.values[0, 0]) and m.batches[0, 0] == 0
    assert np.isnan(m.standard_errors[0, 0])
    client.delete_session(session_id)


def test_health_and_client_arguments(client):
    assert client.health() == "SERVING"
    with pytest.raises(cka.CkaError) as error:
        cka.Client("127.0.0.1:1", root_certs=b"pem")
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(cka.CkaError) as error:
        cka.Client("127.0.0.1:1", tls=True, client_cert=b"pem")
    assert "client_key" in error.value.message
    with pytest.raises(cka.CkaError) as error:
        cka.Client("")
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_unreachable_server_is_unavailable(free_port):
    with cka.Client(f"127.0.0.1:{free_port}") as c:
        with pytest.raises(cka.CkaError) as error:
            c.list_sessions(timeout=5)
    assert error.value.code == grpc.StatusCode.UNAVAILABLE
