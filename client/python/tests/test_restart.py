"""SIGKILL ckad (with --data-dir) while two streamers send, restart it on the same port: the
streamers reconnect and resend every unacknowledged batch, and the session ends with every
batch counted exactly once (its matrix equals the float64 oracle over all batches)."""

import signal

import numpy as np

import cka
from conftest import Ckad
from test_streamer import LAYERS, make_batches, oracle_for, seed_for


def test_sigkill_mid_run_loses_nothing_and_counts_nothing_twice(tmp_path, session_id):
    seed = seed_for("sigkill")
    server = Ckad(str(tmp_path / "ckad.log"), data_dir=str(tmp_path / "data"))
    server.start()
    sources = ("a", "b")
    batches = make_batches(seed, sources, 40)
    try:
        with cka.Client(server.address) as client:
            client.create_session(session_id, streams=[f"{s}/{l}" for s in sources
                                                       for l in LAYERS])
            streamers = {s: cka.Streamer(client, session_id, s, max_in_flight=8,
                                         initial_backoff=0.05, max_backoff=0.5)
                         for s in sources}

            def send(batch_range):
                for b in batch_range:
                    for s in sources:
                        assert streamers[s].submit(f"batch-{b}", b, batches[b][1][s])

            send(range(0, 15))
            for s in sources:
                assert streamers[s].flush(timeout=60) == []  # acked: committed
            send(range(15, 25))  # on their way when ckad dies
            status = server.kill(signal.SIGKILL)
            assert status == -signal.SIGKILL, server.tail()
            send(range(25, 40))  # while ckad is down
            server.start()  # same port and data dir
            for s in sources:
                assert streamers[s].close(timeout=120) == []
            for s in sources:
                stats = streamers[s].stats
                print(f"source {s}: {stats}")
                assert stats.reconnects >= 1
                assert (stats.submitted, stats.acked, stats.rejected) == (40, 40, 0)

            m = client.similarity(session_id)
            expected, counts = oracle_for(m, batches)
            assert (counts == 40).all()
            np.testing.assert_array_equal(m.batches, counts)  # none lost, none twice
            np.testing.assert_allclose(m.values, expected, rtol=0, atol=1e-6)
            info = client.get_session(session_id)
            assert info.batches_applied == 80, info  # 40 batches from each of 2 sources
            assert info.batches_pending == 0 and info.pairs_missed == 0
    finally:
        server.kill()
