"""Streamer: sends activation batches from a training loop to ckad in the background.

``submit`` checks a batch, puts it in a bounded queue and returns; a background thread keeps
one StreamActivations call open, sends queued batches, matches the server's in-order acks,
reconnects with exponential backoff after a failure and resends every batch not yet acked
(ckad acks a batch it has already applied as a duplicate and does not count it again, so a
resend is never counted twice). ``flush`` waits for the acks and returns the batches the
server rejected. The Python counterpart of the C++ ``cka::client::ActivationStreamer``, with
the same options under the same names.

Memory: ``submit`` keeps references to the caller's arrays and CPU tensors (no copy, no
conversion: the training thread's work is O(1) per layer) until the background thread has
encoded the batch, which it does as soon as the stream has room (``flush`` returns after
that). Do not modify them in place before then, or pass ``copy=True``. A torch tensor's
in-place counter guards the rule: the background thread checks it after reading the tensor,
and a batch whose tensor changed comes back as a FAILED_PRECONDITION record instead of being
sent (a change racing with the read itself may slip by; NumPy arrays and inference tensors
count no changes, so nothing guards them). A tensor on another device is copied to the CPU by
``submit``. Encoding copies each tensor's bytes once, from the array into the message.

Thread safety: every method may be called from any thread.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Any, Deque, List, Mapping, Optional, Union

import grpc
import numpy as np

from cka import _wire
from cka._stubs import pb
from cka.client import Client
from cka.errors import CkaError, status_code

_log = logging.getLogger("cka")

POLICIES = ("block", "drop_and_count")
# How long close() waits for the server to end the stream after the half-close.
_HALF_CLOSE_GRACE = 10.0
# Stream-level errors that would recur on a resend of the same batch: the oldest outstanding
# batch fails instead of being resent forever.
_PERMANENT = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.ALREADY_EXISTS,
})


@dataclasses.dataclass(frozen=True)
class BatchError:
    """A batch the server (or the streamer itself) rejected.

    Attributes
    ----------
    batch_id : str
    code : grpc.StatusCode
    message : str
        The server's message, naming the field and the value.
    """

    batch_id: str
    code: grpc.StatusCode
    message: str


@dataclasses.dataclass
class StreamerStats:
    """Counters since the streamer was created (those of the C++ StreamerStats)."""

    submitted: int = 0  # batches accepted by submit
    sent: int = 0  # batch messages written to a stream, resends included
    acked: int = 0  # acks with code OK (duplicates included)
    rejected: int = 0  # acks with an error code, and batches failed before sending
    dropped: int = 0  # batches refused by a full queue under "drop_and_count"
    duplicates: int = 0  # OK acks that the server marked duplicate
    reconnects: int = 0  # streams opened after the first one
    resent: int = 0  # batch messages written again after a reconnect
    gram_reduced_layers: int = 0  # layers sent as Grams by the client-side reduction


@dataclasses.dataclass
class _Queued:
    batch_id: str
    step: int
    layers: List[_wire.Layer]
    nbytes: int


@dataclasses.dataclass
class _Outgoing:
    batch_id: str
    message: bytes
    resend: bool = False


ArrayLike = Any  # numpy.ndarray or torch.Tensor


class Streamer:
    """Streams batches of one source into one session.

    Parameters
    ----------
    client : Client
        Its channel is shared (close the streamer before the client).
    session_id : str
    source : str
        The model or job; streams are named ``source/layer``.
    policy : {"block", "drop_and_count"}
        What ``submit`` does when the queue is full: wait for room (the training loop slows
        to the network's pace), or drop the new batch, count it and return False at once.
    max_queue_batches, max_queue_bytes : int
        Bounds of the queue of batches not yet sent (both apply; one batch always fits).
    max_in_flight : int
        Batches sent but not yet acked, at most (the resend window after a reconnect).
    reduce_to_gram : bool
        Send a layer's n x n linear Gram K = X X^T (float64 accumulation; float32 on the
        wire, float64 for float64 input) instead of its n x d activations when that is fewer
        bytes (n < d for float32). Computed on the background thread. Only for sessions
        without an exact or moment measure: before the first send the streamer reads the
        session's config (``gram_allowed``) and keeps sending activations when it has one.
    initial_backoff, max_backoff, backoff_multiplier : float
        Reconnection backoff: the first wait and the cap (seconds), the factor between waits.
    close_timeout : float
        Seconds the context manager's exit waits for the acks.

    Raises
    ------
    CkaError
        INVALID_ARGUMENT for an empty session id, an unknown policy, non-positive bounds or a
        bad backoff.
    """

    def __init__(
        self,
        client: Client,
        session_id: str,
        source: str = "",
        *,
        policy: str = "block",
        max_queue_batches: int = 64,
        max_queue_bytes: int = 1 << 30,
        max_in_flight: int = 32,
        reduce_to_gram: bool = False,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        backoff_multiplier: float = 2.0,
        close_timeout: float = 60.0,
    ) -> None:
        def bad(message: str) -> CkaError:
            return CkaError(grpc.StatusCode.INVALID_ARGUMENT, message)

        if not session_id:
            raise bad("session_id: empty")
        if policy not in POLICIES:
            raise bad(f"policy '{policy}' is not one of {', '.join(POLICIES)}")
        if max_queue_batches <= 0 or max_queue_bytes <= 0 or max_in_flight <= 0:
            raise bad(
                f"queue bounds must be positive: max_queue_batches {max_queue_batches}, "
                f"max_queue_bytes {max_queue_bytes}, max_in_flight {max_in_flight}"
            )
        if initial_backoff <= 0 or max_backoff < initial_backoff or backoff_multiplier < 1.0:
            raise bad("backoff: initial must be positive, max >= initial, multiplier >= 1")
        self.session_id = session_id
        self.source = source
        self.policy = policy
        self.reduce_to_gram = reduce_to_gram
        #: The batches the context manager's exit got back from close().
        self.rejected: List[BatchError] = []
        self._client = client
        self._max_queue_batches = max_queue_batches
        self._max_queue_bytes = max_queue_bytes
        self._max_in_flight = max_in_flight
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._backoff_multiplier = backoff_multiplier
        self._close_timeout = close_timeout
        self._metadata = client.metadata(session_id)
        # The request serializer is the identity: the streamer writes serialized batches.
        self._method = client.channel.stream_stream(
            "/cka.v1.Similarity/StreamActivations",
            request_serializer=None,
            response_deserializer=pb.BatchAck.FromString,
        )
        self._gram_allowed: Optional[bool] = None  # the session's answer, once asked

        self._cv = threading.Condition()
        self._queue: Deque[_Queued] = collections.deque()
        self._queue_bytes = 0
        self._encoding = 0  # batches taken from the queue, being encoded
        self._unsent: Deque[_Outgoing] = collections.deque()  # encoded, to (re)send first
        self._in_flight: Deque[_Outgoing] = collections.deque()  # sent, awaiting their ack
        self._errors: List[BatchError] = []
        self._stats = StreamerStats()
        self._completed = 0  # acked or failed
        self._closed = False  # no more submit; deliver and stop
        self._stop = False  # stop now
        self._generation = 0  # streams opened so far
        self._ended_generation = 0  # streams that have ended
        self._acked_on_stream = False
        self._call = None
        self._thread = threading.Thread(target=self._run, name="cka-streamer", daemon=True)
        self._thread.start()

    # -- the training thread's side ---------------------------------------------------------

    def submit(
        self,
        batch_id: Union[str, int],
        step: int,
        layers: Mapping[str, ArrayLike],
        grams: Optional[Mapping[str, ArrayLike]] = None,
        copy: bool = False,
        reduce_to_gram: Optional[bool] = None,
    ) -> bool:
        """Checks a batch and queues it; returns at once unless the queue is full.

        Parameters
        ----------
        batch_id : str or int
            The join key across streams and sources (an int is sent as its decimal string).
        step : int
            The training step (the step bucket is that of a batch id's first message).
        layers : mapping of str to array, each of shape (n, d1, ...)
            Activations per layer name: NumPy float32, float64 or float16 arrays, or torch
            tensors of those dtypes or bfloat16 (read, detached, on the background thread; a
            tensor on another device is copied to the CPU here). Row i is example i; further
            dimensions are flattened.
        grams : mapping of str to array of shape (n, n), optional
            Precomputed linear Grams K = X X^T per layer name (symmetric).
        copy : bool
            Copy the arrays and tensors now instead of keeping references until the batch is
            encoded (for memory the caller modifies in place before then).
        reduce_to_gram : bool, optional
            This batch's `layers` go as Grams (see the class's `reduce_to_gram`); None: the
            streamer's setting.

        Returns
        -------
        bool
            True once queued; False when the queue is full under "drop_and_count" (the
            batch is dropped and counted in ``stats.dropped``).

        Raises
        ------
        CkaError
            INVALID_ARGUMENT for an empty batch id, no layers, a dtype, rank or dimension the
            API does not take (naming the batch, the layer and the value);
            RESOURCE_EXHAUSTED when the message would exceed the client's
            max_message_bytes; FAILED_PRECONDITION after close. Under "block" waits for
            room. A tensor modified in place before the batch was encoded comes back from
            ``flush`` as a FAILED_PRECONDITION record naming the layer.
        """
        batch_id = str(batch_id)
        if not batch_id:
            raise CkaError(grpc.StatusCode.INVALID_ARGUMENT, "batch_id: empty")
        reduce = self.reduce_to_gram if reduce_to_gram is None else bool(reduce_to_gram)
        converted: List[_wire.Layer] = []
        for mapping, is_gram in ((layers or {}, False), (grams or {}, True)):
            for name, value in mapping.items():
                layer = _wire.to_layer(batch_id, name, value, is_gram, copy)
                layer.reduce = reduce
                converted.append(layer)
        if not converted:
            raise CkaError(grpc.StatusCode.INVALID_ARGUMENT, f"batch '{batch_id}': no layers")
        payload = 0
        message_bytes = (_wire.BATCH_OVERHEAD_BYTES + len(self.session_id) + len(self.source)
                         + len(batch_id))
        for layer in converted:
            wire = layer.nbytes
            payload += wire
            if layer.reduce and _wire.gram_is_smaller(layer):
                wire = _wire.gram_bytes(layer)
            message_bytes += wire + _wire.LAYER_OVERHEAD_BYTES + len(layer.name)
        if message_bytes > self._client.max_message_bytes:
            raise CkaError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"batch '{batch_id}': its message is about {message_bytes} bytes, over the max "
                f"message size of {self._client.max_message_bytes} bytes; send fewer layers or "
                "examples per batch, or raise the limit on both sides",
            )

        def has_room() -> bool:
            if not self._queue:
                return True  # one batch always fits, however large
            return (len(self._queue) < self._max_queue_batches
                    and self._queue_bytes + payload <= self._max_queue_bytes)

        with self._cv:
            if not self._closed and not self._stop and not has_room():
                if self.policy == "drop_and_count":
                    self._stats.dropped += 1
                    return False
                self._cv.wait_for(lambda: self._closed or self._stop or has_room())
            if self._closed or self._stop:
                raise CkaError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"batch '{batch_id}': the streamer is closed")
            self._queue.append(_Queued(batch_id, int(step), converted, payload))
            self._queue_bytes += payload
            self._stats.submitted += 1
            self._cv.notify_all()
        return True

    def flush(self, timeout: Optional[float] = None) -> List[BatchError]:
        """Waits until every batch submitted before the call is acked or failed.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait (None = no limit).

        Returns
        -------
        list of BatchError
            The batches that failed since the previous flush (removed from the streamer).

        Raises
        ------
        CkaError
            DEADLINE_EXCEEDED naming the batches still outstanding when `timeout` passes or
            the streamer was stopped (the errors stay for the next flush).
        """
        with self._cv:
            target = self._stats.submitted
            self._cv.wait_for(lambda: self._completed >= target or self._stop, timeout)
            if self._completed < target:
                ids = [o.batch_id for o in self._in_flight] + [o.batch_id for o in self._unsent]
                ids += [q.batch_id for q in self._queue]
                if len(ids) > 8:
                    ids = ids[:8] + ["..."]
                why = " (the streamer is stopped)" if self._stop else " by the deadline"
                raise CkaError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"{target - self._completed} of {target} batches not acked{why}; "
                    f"outstanding: {', '.join(ids)}; reconnects so far: "
                    f"{self._stats.reconnects}",
                )
            errors, self._errors = self._errors, []
            return errors

    def close(self, timeout: Optional[float] = None) -> List[BatchError]:
        """Flushes, then half-closes the stream and stops the background thread.

        Returns flush's result and raises its CkaError (then stops without waiting for the
        acks). submit fails afterwards. Idempotent.
        """
        error: Optional[CkaError] = None
        try:
            result = self.flush(timeout)
        except CkaError as e:
            error, result = e, []
        with self._cv:
            self._closed = True
            if error is not None:
                self._stop = True
                if self._call is not None:
                    self._call.cancel()
            self._cv.notify_all()
        self._thread.join(_HALF_CLOSE_GRACE)
        if self._thread.is_alive():
            with self._cv:
                self._stop = True
                if self._call is not None:
                    self._call.cancel()
                self._cv.notify_all()
            self._thread.join()
        if error is not None:
            raise error
        return result

    def gram_allowed(self, ask: bool = True) -> Optional[bool]:
        """Returns whether the session takes Gram payloads (it has no exact or moment measure).

        The answer is read once from the session's config (GetSession) and kept: by this
        call when `ask`, or by the background thread before it encodes the first batch that
        asks for Gram reduction.

        Parameters
        ----------
        ask : bool
            Ask the server now (a unary call on the calling thread, at most the client's
            timeout) when the answer is not known yet; False only reads what is known.

        Returns
        -------
        bool or None
            None while unknown: not asked yet, or the call failed (the session does not
            exist yet, the server is unreachable); the failure is not raised.
        """
        if ask:
            self._resolve_gram_reduction()
        with self._cv:
            return self._gram_allowed

    @property
    def stats(self) -> StreamerStats:
        """Returns a copy of the counters."""
        with self._cv:
            return dataclasses.replace(self._stats)

    def __enter__(self) -> "Streamer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Closes with `close_timeout`; the rejected batches go to ``self.rejected`` (and the
        log). When the block raised, a failed close is logged instead of raised."""
        try:
            self.rejected.extend(self.close(self._close_timeout))
        except CkaError as error:
            if exc_type is None:
                raise
            _log.warning("cka.Streamer(%s): %s", self.session_id, error)
        for e in self.rejected:
            _log.warning("cka.Streamer(%s): batch '%s' rejected: %s: %s", self.session_id,
                         e.batch_id, e.code.name, e.message)

    # -- the background side ----------------------------------------------------------------

    def _outstanding(self) -> int:
        return len(self._queue) + self._encoding + len(self._unsent) + len(self._in_flight)

    def _fail(self, batch_id: str, code: grpc.StatusCode, message: str) -> None:
        self._stats.rejected += 1
        self._completed += 1
        self._errors.append(BatchError(batch_id, code, message))
        self._cv.notify_all()

    def _run(self) -> None:
        backoff = self._initial_backoff
        first = True
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._stop or self._closed or self._outstanding() > 0)
                if self._stop or (self._closed and self._outstanding() == 0):
                    return
                if not first:
                    self._stats.reconnects += 1
            first = False
            if self._run_stream():
                return
            with self._cv:
                if self._acked_on_stream:
                    backoff = self._initial_backoff
                self._cv.wait_for(lambda: self._stop, backoff)
                if self._stop:
                    return
            backoff = min(self._max_backoff, backoff * self._backoff_multiplier)

    def _run_stream(self) -> bool:
        """Runs one stream until it ends; returns True when the streamer is done."""
        with self._cv:
            self._generation += 1
            generation = self._generation
            self._acked_on_stream = False
        call = self._method(self._requests(generation), metadata=self._metadata)
        with self._cv:
            self._call = call
            if self._stop:
                call.cancel()
        code: Optional[grpc.StatusCode] = None
        details = ""
        try:
            for ack in call:
                self._on_ack(ack)
        except grpc.RpcError as error:
            code, details = error.code(), error.details() or ""
        with self._cv:
            self._call = None
            self._ended_generation = generation  # ends the request iterator
            self._cv.notify_all()
            if self._stop or (self._closed and self._outstanding() == 0):
                return True
            # Every batch not acked goes out again, oldest first, on the next stream.
            for out in reversed(self._in_flight):
                out.resend = True
                self._unsent.appendleft(out)
            self._in_flight.clear()
            if code is not None and code in _PERMANENT:
                if self._unsent:
                    self._fail(self._unsent.popleft().batch_id, code, details)
                elif self._queue:
                    queued = self._queue.popleft()
                    self._queue_bytes -= queued.nbytes
                    self._fail(queued.batch_id, code, details)
            if code is not None:
                _log.info("cka.Streamer(%s): stream ended: %s: %s; reconnecting",
                          self.session_id, code.name, details)
            return False

    def _requests(self, generation: int):
        """Yields the serialized batches of stream `generation`; ends (half-closes) once the
        streamer is closed and everything is acked, or when the stream has ended."""

        def ended() -> bool:
            return self._stop or self._ended_generation >= generation

        def ready() -> bool:
            if ended() or (self._closed and self._outstanding() == 0):
                return True
            return len(self._in_flight) < self._max_in_flight and bool(self._unsent or self._queue)

        while True:
            queued: Optional[_Queued] = None
            with self._cv:
                self._cv.wait_for(ready)
                if ended() or (self._closed and self._outstanding() == 0):
                    return
                if self._unsent:
                    out = self._unsent.popleft()
                    self._register(out)
                else:
                    queued = self._queue.popleft()
                    self._queue_bytes -= queued.nbytes
                    self._encoding += 1
                    self._cv.notify_all()  # room for a blocked submit
            if queued is not None:
                try:
                    out = _Outgoing(queued.batch_id, self._encode(queued))
                    failure = None
                except CkaError as error:
                    failure = error
                except Exception as error:  # a bug in encoding must not kill the stream
                    failure = CkaError(grpc.StatusCode.INTERNAL,
                                       f"batch '{queued.batch_id}': encoding failed: {error!r}")
                queued.layers = []
                with self._cv:
                    self._encoding -= 1
                    if failure is not None:
                        self._fail(queued.batch_id, failure.code, failure.message)
                        continue
                    if ended():
                        # Newer than every batch the ended stream gave back: it goes last.
                        self._unsent.append(out)
                        self._cv.notify_all()
                        return
                    self._register(out)
            yield out.message

    def _register(self, out: _Outgoing) -> None:
        # Registered before the write so that its ack always finds it.
        self._in_flight.append(out)
        self._stats.sent += 1
        if out.resend:
            self._stats.resent += 1

    def _resolve_gram_reduction(self) -> None:
        if self._gram_allowed is not None:
            return
        try:
            session = self._client.get_session(self.session_id)
        except CkaError:
            return  # ask again next batch
        # An exact estimator, and every moment measure (CCA, Procrustes, ...), needs the rows.
        allowed = not any(m.estimator in ("exact", "exact_debiased") or m.kind != "cka"
                          for m in session.measures)
        with self._cv:
            self._gram_allowed = allowed

    def _encode(self, queued: _Queued) -> bytes:
        layers = [_wire.to_numpy(queued.batch_id, layer) for layer in queued.layers]
        reduced = 0
        if any(layer.reduce and _wire.gram_is_smaller(layer) for layer in layers):
            self._resolve_gram_reduction()
            if self._gram_allowed:
                for i, layer in enumerate(layers):
                    if layer.reduce and _wire.gram_is_smaller(layer):
                        gram = _wire.gram_of(layer)
                        if not np.isfinite(gram.array).all():
                            error = _wire.first_non_finite(self.source, queued.batch_id, layer)
                            if error is not None:
                                raise error
                        layers[i] = gram
                        reduced += 1
        message = _wire.encode(self.session_id, self.source, queued.batch_id, queued.step, layers)
        # A tensor changed while it was read would leave a torn batch: checked after the reads.
        for layer in queued.layers:
            error = _wire.modified_in_place(queued.batch_id, layer)
            if error is not None:
                raise error
        if len(message) > self._client.max_message_bytes:
            raise CkaError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"batch '{queued.batch_id}': its message is {len(message)} bytes, over the max "
                f"message size of {self._client.max_message_bytes} bytes",
            )
        if reduced:
            with self._cv:
                self._stats.gram_reduced_layers += reduced
        return message

    def _on_ack(self, ack: "pb.BatchAck") -> None:
        with self._cv:
            # Acks come in order; a mismatch would be a server bug, so look further rather
            # than blame the wrong batch.
            for i, out in enumerate(self._in_flight):
                if out.batch_id == ack.batch_id:
                    del self._in_flight[i]
                    break
            else:
                return
            self._acked_on_stream = True
            if ack.code == 0:
                self._stats.acked += 1
                self._completed += 1
                if ack.duplicate:
                    self._stats.duplicates += 1
            else:
                self._fail(ack.batch_id, status_code(ack.code), ack.message)
            self._cv.notify_all()
