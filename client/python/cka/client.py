"""Client: sessions, similarity queries and watches of the cka.v1.Similarity service."""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import grpc
import numpy as np

from cka._stubs import pb, pb_grpc
from cka.errors import CkaError

#: The metadata key that carries the session id of every call that has one (a router sends
#: all of a session's calls to the replica that holds it).
SESSION_METADATA_KEY = "x-cka-session"
#: The trailing metadata key of every GetSimilarity answer: ckad's own milliseconds.
SERVER_TIME_METADATA_KEY = "x-cka-server-time-ms"

_KERNELS = {"linear": pb.LINEAR, "rbf": pb.RBF}
_ESTIMATORS = {
    "unbiased": pb.UNBIASED,
    "biased": pb.BIASED,
    "exact": pb.EXACT,
    "exact_debiased": pb.EXACT_DEBIASED,
}
#: The comparison family (core/MATH.md), computed from the feature-space second moments.
_KINDS = {
    "cka": pb.CKA,
    "cca_r2": pb.CCA_R2,
    "cca_mean_rho": pb.CCA_MEAN_RHO,
    "svcca": pb.SVCCA,
    "pwcca": pb.PWCCA,
    "regression_r2": pb.REGRESSION_R2,
    "procrustes": pb.PROCRUSTES,
}
_HEALTH = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


@dataclasses.dataclass(frozen=True)
class Measure:
    """One measure a session keeps: a kernel, an estimator and a kind under a name.

    Parameters
    ----------
    name : str
        The name queries use (``similarity(measure=...)``).
    kernel : {"linear", "rbf"}
    estimator : {"unbiased", "biased", "exact", "exact_debiased"}
        ``unbiased`` (Song et al.'s HSIC1) needs batches of n >= 4 examples; the exact ones
        need declared streams.
    rbf_threshold : float
        t of the RBF kernel exp(-D^2 / (2 t^2 median D^2)); only with ``kernel="rbf"``.
    kind : {"cka", "cca_r2", "cca_mean_rho", "svcca", "pwcca", "regression_r2", "procrustes"}
        What the measure computes: CKA, or one of the comparison family from the second
        moments over every row streamed, which needs ``kernel="linear"``,
        ``estimator="exact"`` and declared streams. ``regression_r2`` and ``pwcca`` are
        asymmetric: entry [i, j] has X = row stream i, Y = column stream j (regression: the
        share of column stream j's variance that a linear fit from row stream i explains).
        ``Measure.of_kind(name, kind)`` builds one.

    Raises
    ------
    CkaError
        INVALID_ARGUMENT for an unknown kernel, estimator or kind.
    """

    name: str
    kernel: str = "linear"
    estimator: str = "unbiased"
    rbf_threshold: float = 0.0
    kind: str = "cka"

    @classmethod
    def of_kind(cls, name: str, kind: str) -> "Measure":
        """Returns the comparison-family measure `kind` (linear kernel, exact estimator).

        Raises
        ------
        CkaError
            INVALID_ARGUMENT for an unknown kind.
        """
        return cls(name, "linear", "exact", 0.0, kind)

    @classmethod
    def parse(cls, spec: str) -> "Measure":
        """Returns the measure of a ckactl spec ``name:kernel[:estimator[:threshold]]``,
        or ``name:kind`` for the comparison family (``cca:cca_r2``).

        Raises
        ------
        CkaError
            INVALID_ARGUMENT for a spec that does not parse.
        """
        parts = spec.split(":")
        if len(parts) < 2 or len(parts) > 4 or not parts[0]:
            raise CkaError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"measure '{spec}': expected name:kernel[:estimator[:threshold]], "
                "e.g. lin:linear:unbiased or rbf05:rbf:biased:0.5, or name:kind",
            )
        if len(parts) == 2 and parts[1].lower() in _KINDS and parts[1].lower() != "cka":
            return cls.of_kind(parts[0], parts[1].lower())
        try:
            threshold = float(parts[3]) if len(parts) > 3 else 0.0
        except ValueError:
            raise CkaError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"measure '{spec}': threshold '{parts[3]}' is not a number",
            ) from None
        return cls(
            parts[0],
            parts[1].lower(),
            parts[2].lower() if len(parts) > 2 else "unbiased",
            threshold,
        )

    def __post_init__(self) -> None:
        """Raises CkaError INVALID_ARGUMENT for an unknown kernel or estimator."""
        if self.kernel not in _KERNELS:
            raise CkaError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"measure '{self.name}': kernel '{self.kernel}' is not linear or rbf",
            )
        if self.estimator not in _ESTIMATORS:
            raise CkaError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"measure '{self.name}': estimator '{self.estimator}' is not unbiased, "
                "biased, exact or exact_debiased",
            )
        if self.kind not in _KINDS:
            raise CkaError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"measure '{self.name}': kind '{self.kind}' is not one of "
                + ", ".join(_KINDS),
            )

    def to_proto(self) -> "pb.Measure":
        """Returns the wire message."""
        return pb.Measure(
            name=self.name,
            kernel=_KERNELS[self.kernel],
            estimator=_ESTIMATORS[self.estimator],
            rbf_threshold=self.rbf_threshold,
            kind=_KINDS[self.kind] if self.kind != "cka" else pb.MEASURE_KIND_UNSPECIFIED,
        )

    @classmethod
    def from_proto(cls, m: "pb.Measure") -> "Measure":
        """Returns the measure of a wire message (unspecified = linear, unbiased, cka)."""
        kernel = {v: k for k, v in _KERNELS.items()}.get(m.kernel, "linear")
        kind = {v: k for k, v in _KINDS.items()}.get(m.kind, "cka")
        estimator = {v: k for k, v in _ESTIMATORS.items()}.get(
            m.estimator, "exact" if kind != "cka" else "unbiased")
        return cls(m.name, kernel, estimator, m.rbf_threshold, kind)


@dataclasses.dataclass(frozen=True)
class Session:
    """A session's config and counters, as GetSession answers them.

    ``streams`` are the streams seen or declared (``source/layer``); ``declared_streams``
    the config's. The counters are those of proto/cka/v1/similarity.proto's Session;
    ``proto`` is the message itself.
    """

    session_id: str
    measures: Tuple[Measure, ...]
    declared_streams: Tuple[str, ...]
    step_bucket: int
    expected_sources: Tuple[str, ...]
    join_window: int
    streams: Tuple[str, ...]
    batches_applied: int
    batches_pending: int
    batches_evicted: int
    pairs_missed: int
    state_bytes: int
    pending_bytes: int
    held_bytes: int
    proto: "pb.Session" = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, s: "pb.Session") -> "Session":
        """Returns the session of a wire message."""
        c = s.config
        return cls(
            session_id=s.session_id,
            measures=tuple(Measure.from_proto(m) for m in c.measures),
            declared_streams=tuple(c.streams),
            step_bucket=c.step_bucket,
            expected_sources=tuple(c.expected_sources),
            join_window=c.join_window,
            streams=tuple(s.streams),
            batches_applied=s.batches_applied,
            batches_pending=s.batches_pending,
            batches_evicted=s.batches_evicted,
            pairs_missed=s.pairs_missed,
            state_bytes=s.state_bytes,
            pending_bytes=s.pending_bytes,
            held_bytes=s.held_bytes,
            proto=s,
        )


def _standard_errors(errors: Sequence[float], shape: Tuple[int, int]) -> np.ndarray:
    """Returns `errors` as a float64 array of `shape`; all NaN when the server sent none."""
    if len(errors) != shape[0] * shape[1]:
        return np.full(shape, np.nan)
    return np.array(errors, dtype=np.float64).reshape(shape)


@dataclasses.dataclass(frozen=True)
class LayerBlock:
    """A run of consecutive layers of one source whose pairwise values all exceed a threshold.

    What ``similarity(..., block_threshold=t)`` finds over each source's own layers (in the
    session's first-seen order): the longest runs first, never overlapping (core/MATH.md,
    "Block structure").

    Attributes
    ----------
    source : str
        The part of the stream names before ``/`` ("" for streams without one).
    first_stream, last_stream : str
        The run's first and last layer (full stream names).
    first_layer : int
        Position of `first_stream` among the source's layers (0-based).
    length : int
        Layers in the run, >= 2.
    source_layers : int
        Layers of the source.
    mean_value, min_value : float
        Mean and minimum of the run's off-diagonal entries.
    warning : bool
        True when `length` exceeds the query's share of `source_layers`.
    """

    source: str
    first_stream: str
    last_stream: str
    first_layer: int
    length: int
    source_layers: int
    mean_value: float
    min_value: float
    warning: bool

    @classmethod
    def from_proto(cls, b: "pb.LayerBlock") -> "LayerBlock":
        """Returns the block of a wire message."""
        return cls(source=b.source, first_stream=b.first_stream, last_stream=b.last_stream,
                   first_layer=b.first_layer, length=b.length, source_layers=b.source_layers,
                   mean_value=b.mean_value, min_value=b.min_value, warning=b.warning)


@dataclasses.dataclass(frozen=True)
class SimilarityMatrix:
    """A CKA matrix with its labels.

    Attributes
    ----------
    values : numpy.ndarray, float64, shape (len(rows), len(cols))
        CKA of stream rows[i] with stream cols[j]; NaN where there is no value.
    rows, cols : list of str
        Stream names (``source/layer``).
    batches : numpy.ndarray, int64, shape (len(rows), len(cols))
        The number of batches both streams share, per entry.
    standard_errors : numpy.ndarray, float64, shape (len(rows), len(cols))
        The standard error of each minibatch CKA entry over its batches (the delta method);
        NaN for an exact or moment measure, an entry with no value or fewer than 2 batches,
        batches stored before ckad kept the standard error's sums, or a server that does not
        send them.
    session_id, measure : str
    server_time_ms : float or None
        ckad's own time for the answer (GetSimilarity's trailing metadata), when sent.
    blocks : tuple of LayerBlock
        With ``block_threshold``: each source's blocks, by source then first layer.
    note : str
        A moment measure's word on its values (empty when none): why entries are NaN (a
        stream without variance) and where CCA's correlations are 1 whatever the data.
    """

    session_id: str
    measure: str
    rows: List[str]
    cols: List[str]
    values: np.ndarray
    batches: np.ndarray
    standard_errors: np.ndarray
    server_time_ms: Optional[float] = None
    blocks: Tuple[LayerBlock, ...] = ()
    note: str = ""

    @classmethod
    def from_proto(
        cls, m: "pb.SimilarityMatrix", server_time_ms: Optional[float] = None
    ) -> "SimilarityMatrix":
        """Returns the matrix of a wire message."""
        shape = (len(m.rows), len(m.cols))
        return cls(
            session_id=m.session_id,
            measure=m.measure,
            rows=list(m.rows),
            cols=list(m.cols),
            values=np.array(m.values, dtype=np.float64).reshape(shape),
            batches=np.array(m.batches, dtype=np.int64).reshape(shape),
            standard_errors=_standard_errors(m.standard_errors, shape),
            server_time_ms=server_time_ms,
            blocks=tuple(LayerBlock.from_proto(b) for b in m.blocks),
            note=m.note,
        )


@dataclasses.dataclass(frozen=True)
class SimilaritySeries:
    """CKA over training: each chosen pair's value in every step bucket on its own.

    Attributes
    ----------
    pairs : list of (str, str)
        The (row, col) stream pairs, in the order asked.
    step_first, step_last : numpy.ndarray, int64, shape (buckets,)
        The first and last step of each bucket with data, ascending (int64 min and max when
        the session has one bucket for all time).
    values : numpy.ndarray, float64, shape (buckets, len(pairs))
        CKA of pairs[j] over bucket i's batches alone; NaN where there is no value.
    batches : numpy.ndarray, int64, shape (buckets, len(pairs))
        The batches both streams of the pair share in the bucket.
    standard_errors : numpy.ndarray, float64, shape (buckets, len(pairs))
        The standard error of each value (as in SimilarityMatrix).
    session_id, measure : str
    step_bucket : int
        The session's bucket width in steps (0 = one bucket).
    """

    session_id: str
    measure: str
    pairs: List[Tuple[str, str]]
    step_bucket: int
    step_first: np.ndarray
    step_last: np.ndarray
    values: np.ndarray
    batches: np.ndarray
    standard_errors: np.ndarray

    @classmethod
    def from_proto(cls, m: "pb.SimilaritySeries") -> "SimilaritySeries":
        """Returns the series of a wire message."""
        shape = (len(m.buckets), len(m.pairs))
        return cls(
            session_id=m.session_id,
            measure=m.measure,
            pairs=[(p.row, p.col) for p in m.pairs],
            step_bucket=m.step_bucket,
            step_first=np.array([b.step_first for b in m.buckets], dtype=np.int64),
            step_last=np.array([b.step_last for b in m.buckets], dtype=np.int64),
            values=np.array([v for b in m.buckets for v in b.values],
                            dtype=np.float64).reshape(shape),
            batches=np.array([n for b in m.buckets for n in b.batches],
                             dtype=np.int64).reshape(shape),
            standard_errors=_standard_errors(
                [e for b in m.buckets for e in b.standard_errors], shape),
        )


MeasureLike = Union[Measure, str]


class Watch:
    """A running WatchSimilarity call: iterate it for the matrix now and every change.

    Iteration ends when the server ends the watch, when ``cancel()`` is called (from any
    thread), or when the watch's timeout passes (a watch that ran its course is not an
    error); any other failure raises CkaError (NOT_FOUND for an unknown session, ...). A
    context manager: leaving it cancels the call.
    """

    def __init__(self, call, timed: bool) -> None:
        self._call = call
        self._timed = timed
        self._cancelled = False

    def __iter__(self) -> "Watch":
        return self

    def __next__(self) -> SimilarityMatrix:
        try:
            return SimilarityMatrix.from_proto(next(self._call))
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.CANCELLED and self._cancelled:
                raise StopIteration from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and self._timed:
                raise StopIteration from None
            raise CkaError.from_rpc_error(error) from None

    def cancel(self) -> None:
        """Ends the watch; a blocked iteration stops."""
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()


def _health_request(service: str) -> bytes:
    data = service.encode()
    if not data:
        return b""
    return b"\x0a" + _varint(len(data)) + data


def _health_response(data: bytes) -> str:
    # grpc.health.v1.HealthCheckResponse: field 1, varint.
    status, i = 0, 0
    while i < len(data):
        tag, i = _read_varint(data, i)
        if tag == 0x08:
            status, i = _read_varint(data, i)
        elif tag & 7 == 2:
            length, i = _read_varint(data, i)
            i += length
        else:
            _, i = _read_varint(data, i)
    return _HEALTH.get(status, "UNKNOWN")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, i: int) -> Tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


class Client:
    """A client of ckad's cka.v1.Similarity service.

    Parameters
    ----------
    address : str
        ``host:port`` of ckad.
    token : str, optional
        Sent as ``authorization: Bearer <token>`` on every call (ckad's --auth-tokens).
    tls : bool
        Use TLS. The server's certificate is checked against `root_certs` (PEM; None: the
        system's roots) and the name `server_name` (None: the host of `address`);
        `client_cert` and `client_key` (PEM, both or neither) present a client certificate.
    timeout : float
        Seconds of a unary call that is not given its own timeout.
    max_message_bytes : int
        Largest message sent or received; must not exceed ckad's --max-message-mb. A
        Streamer refuses larger batches before sending them.
    keepalive_time, keepalive_timeout : float
        Seconds: ping after `keepalive_time` without traffic while a call is open; give the
        connection up without an answer within `keepalive_timeout`. Not below ckad's
        --min-ping-interval-s (10 s by default).
    reconnect_backoff : (float, float)
        First and longest wait of the channel between connection attempts, seconds.

    Raises
    ------
    CkaError
        INVALID_ARGUMENT for an empty address, non-positive limits, TLS files without
        `tls`, or only one of `client_cert` and `client_key`.

    Notes
    -----
    Does not connect: the first call does. Every call raises CkaError with the gRPC code and
    the server's message. A context manager: leaving it closes the channel. Thread-safe.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        token: Optional[str] = None,
        tls: bool = False,
        root_certs: Optional[Union[bytes, str]] = None,
        client_cert: Optional[Union[bytes, str]] = None,
        client_key: Optional[Union[bytes, str]] = None,
        server_name: Optional[str] = None,
        timeout: float = 10.0,
        max_message_bytes: int = 64 << 20,
        keepalive_time: float = 30.0,
        keepalive_timeout: float = 10.0,
        reconnect_backoff: Tuple[float, float] = (0.1, 5.0),
    ) -> None:
        def bad(message: str) -> CkaError:
            return CkaError(grpc.StatusCode.INVALID_ARGUMENT, message)

        if not address:
            raise bad("address: empty")
        if timeout <= 0 or max_message_bytes <= 0 or keepalive_time <= 0 or keepalive_timeout <= 0:
            raise bad(
                f"timeout {timeout}, max_message_bytes {max_message_bytes}, keepalive_time "
                f"{keepalive_time} and keepalive_timeout {keepalive_timeout} must be positive"
            )
        if not tls and any(x is not None for x in (root_certs, client_cert, client_key, server_name)):
            raise bad("root_certs, client_cert, client_key and server_name need tls=True")
        if (client_cert is None) != (client_key is None):
            raise bad("client_cert and client_key: give both or neither")
        self.address = address
        self.timeout = float(timeout)
        self.max_message_bytes = int(max_message_bytes)
        self._token = token
        limit = min(self.max_message_bytes, 2**31 - 1)
        options = [
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit),
            ("grpc.keepalive_time_ms", int(keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", int(keepalive_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.initial_reconnect_backoff_ms", max(1, int(reconnect_backoff[0] * 1000))),
            ("grpc.min_reconnect_backoff_ms", max(1, int(reconnect_backoff[0] * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(1, int(reconnect_backoff[1] * 1000))),
        ]
        if tls:
            if server_name:
                options.append(("grpc.ssl_target_name_override", server_name))
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_pem(root_certs),
                private_key=_pem(client_key),
                certificate_chain=_pem(client_cert),
            )
            self.channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self._stub = pb_grpc.SimilarityStub(self.channel)
        self._health = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=_health_request,
            response_deserializer=_health_response,
        )

    # -- plumbing ---------------------------------------------------------------------------

    def metadata(self, session_id: str = "") -> List[Tuple[str, str]]:
        """Returns the metadata every call of this client carries (token, session id)."""
        md = []
        if self._token:
            md.append(("authorization", f"Bearer {self._token}"))
        if session_id:
            md.append((SESSION_METADATA_KEY, session_id))
        return md

    def _call(self, method, request, session_id: str = "", timeout: Optional[float] = None):
        try:
            return method(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self.metadata(session_id),
            )
        except grpc.RpcError as error:
            raise CkaError.from_rpc_error(error) from None

    def close(self) -> None:
        """Closes the channel; running watches and streamers on it end. Idempotent."""
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- sessions ---------------------------------------------------------------------------

    def create_session(
        self,
        session_id: str,
        measures: Optional[Iterable[MeasureLike]] = None,
        streams: Optional[Sequence[str]] = None,
        step_bucket: int = 0,
        expected_sources: Optional[Sequence[str]] = None,
        join_window: int = 0,
        stream_widths: Optional[Sequence[int]] = None,
        timeout: Optional[float] = None,
    ) -> Session:
        """Creates session `session_id`; idempotent for an equal config.

        Parameters
        ----------
        measures : iterable of Measure or str, optional
            Measures or ckactl specs (``"lin:linear:unbiased"``); none = one measure
            "linear" (linear kernel, unbiased).
        streams : sequence of str, optional
            Declared streams ``source/layer`` (needed by the exact estimators, and the way
            to join several sources without loss).
        step_bucket : int
            Steps per bucket (0 = one bucket for all time).
        expected_sources : sequence of str, optional
            Without declared streams: the sources every batch waits for.
        join_window : int
            Without declared streams: batch ids that keep their kernels (0 = 16).
        stream_widths : sequence of int, optional
            Widths of the declared streams (0 = unknown).

        Returns
        -------
        Session

        Raises
        ------
        CkaError
            ALREADY_EXISTS when the id exists with another config; INVALID_ARGUMENT for a
            bad config; RESOURCE_EXHAUSTED over ckad's limits.
        """
        config = pb.SessionConfig(
            measures=[
                (Measure.parse(m) if isinstance(m, str) else m).to_proto() for m in measures or ()
            ],
            streams=list(streams or ()),
            step_bucket=step_bucket,
            stream_widths=list(stream_widths or ()),
            expected_sources=list(expected_sources or ()),
            join_window=join_window,
        )
        request = pb.CreateSessionRequest(session_id=session_id, config=config)
        return Session.from_proto(
            self._call(self._stub.CreateSession, request, session_id, timeout)
        )

    def get_session(self, session_id: str, timeout: Optional[float] = None) -> Session:
        """Returns session `session_id` with its counters; CkaError NOT_FOUND when none."""
        request = pb.GetSessionRequest(session_id=session_id)
        return Session.from_proto(self._call(self._stub.GetSession, request, session_id, timeout))

    def list_sessions(self, timeout: Optional[float] = None) -> List[Session]:
        """Returns every session."""
        response = self._call(self._stub.ListSessions, pb.ListSessionsRequest(), "", timeout)
        return [Session.from_proto(s) for s in response.sessions]

    def delete_session(self, session_id: str, timeout: Optional[float] = None) -> None:
        """Deletes session `session_id`; CkaError NOT_FOUND when none."""
        request = pb.DeleteSessionRequest(session_id=session_id)
        self._call(self._stub.DeleteSession, request, session_id, timeout)

    # -- queries ----------------------------------------------------------------------------

    @staticmethod
    def _query(
        session_id: str,
        measure: Optional[str],
        rows: Optional[Sequence[str]],
        cols: Optional[Sequence[str]],
        step_min: Optional[int],
        step_max: Optional[int],
    ) -> "pb.GetSimilarityRequest":
        request = pb.GetSimilarityRequest(
            session_id=session_id,
            measure=measure or "",
            rows=list(rows or ()),
            cols=list(cols or ()),
        )
        if step_min is not None:
            request.step_min = step_min
        if step_max is not None:
            request.step_max = step_max
        return request

    def similarity(
        self,
        session_id: str,
        measure: Optional[str] = None,
        rows: Optional[Sequence[str]] = None,
        cols: Optional[Sequence[str]] = None,
        step_min: Optional[int] = None,
        step_max: Optional[int] = None,
        timeout: Optional[float] = None,
        block_threshold: Optional[float] = None,
        block_warn_share: Optional[float] = None,
    ) -> SimilarityMatrix:
        """Returns the CKA matrix of `rows` x `cols`.

        Parameters
        ----------
        measure : str, optional
            A measure of the session (None = its first).
        rows, cols : sequence of str, optional
            Streams ``source/layer`` (None = all streams).
        step_min, step_max : int, optional
            A step range: `step_min` must start a step bucket and `step_max` end one.
        block_threshold : float, optional
            In (0, 1]: also return ``blocks``, each source's runs of consecutive layers whose
            pairwise values all exceed it (over the source's own layers, whatever `rows` and
            `cols` are; same measure and step range).
        block_warn_share : float, optional
            In (0, 1] (None = 0.5): a block warns when it is longer than this share of its
            source's layers.

        Returns
        -------
        SimilarityMatrix
            ``values`` float64 (len(rows), len(cols)), NaN where there is no value;
            ``batches`` int64 and ``standard_errors`` float64 of the same shape.

        Raises
        ------
        CkaError
            NOT_FOUND for an unknown session, measure or stream; INVALID_ARGUMENT for a step
            range that does not fall on bucket bounds, or a block option outside (0, 1].
        """
        request = self._query(session_id, measure, rows, cols, step_min, step_max)
        if block_threshold is not None:
            request.block_threshold = block_threshold
        if block_warn_share is not None:
            request.block_warn_share = block_warn_share
        try:
            response, call = self._stub.GetSimilarity.with_call(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self.metadata(session_id),
            )
        except grpc.RpcError as error:
            raise CkaError.from_rpc_error(error) from None
        server_ms = None
        for key, value in call.trailing_metadata() or ():
            if key == SERVER_TIME_METADATA_KEY:
                try:
                    server_ms = float(value)
                except ValueError:
                    pass
        return SimilarityMatrix.from_proto(response, server_ms)

    def similarity_series(
        self,
        session_id: str,
        pairs: Sequence[Tuple[str, str]],
        measure: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> SimilaritySeries:
        """Returns CKA over training: each (row, col) pair's value in every step bucket.

        Parameters
        ----------
        pairs : sequence of (str, str)
            1 to 1024 pairs of streams ``source/layer``.
        measure : str, optional
            A minibatch measure of the session (None = its first).

        Returns
        -------
        SimilaritySeries
            ``values`` float64 (buckets, len(pairs)), NaN where there is no value;
            ``standard_errors`` float64 of the same shape.

        Raises
        ------
        CkaError
            NOT_FOUND for an unknown session, measure or stream; INVALID_ARGUMENT for no
            pairs or too many; FAILED_PRECONDITION for an exact measure (no sums per bucket).
        """
        request = pb.GetSimilaritySeriesRequest(
            session_id=session_id,
            measure=measure or "",
            pairs=[pb.StreamPair(row=row, col=col) for row, col in pairs],
        )
        response = self._call(self._stub.GetSimilaritySeries, request, session_id, timeout)
        return SimilaritySeries.from_proto(response)

    def watch(
        self,
        session_id: str,
        measure: Optional[str] = None,
        rows: Optional[Sequence[str]] = None,
        cols: Optional[Sequence[str]] = None,
        step_min: Optional[int] = None,
        step_max: Optional[int] = None,
        min_interval: float = 1.0,
        timeout: Optional[float] = None,
    ) -> Watch:
        """Watches the matrix of `similarity`'s query: the matrix now, then every change.

        Parameters
        ----------
        min_interval : float
            Seconds between two matrices, at least.
        timeout : float, optional
            Seconds after which iteration ends (None = until cancelled or the server ends it).

        Returns
        -------
        Watch
            An iterator of SimilarityMatrix; ``cancel()`` ends it. Errors (NOT_FOUND for an
            unknown session, ...) raise CkaError from the iteration.
        """
        request = pb.WatchSimilarityRequest(
            query=self._query(session_id, measure, rows, cols, step_min, step_max),
            min_interval_ms=int(min_interval * 1000),
        )
        call = self._stub.WatchSimilarity(
            request, timeout=timeout, metadata=self.metadata(session_id)
        )
        return Watch(call, timeout is not None)

    def health(self, service: str = "", timeout: Optional[float] = None) -> str:
        """Returns the standard gRPC health status of `service` ("" = the whole server).

        Returns
        -------
        str
            "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN" or "UNKNOWN".

        Raises
        ------
        CkaError
            NOT_FOUND for a service the server does not know; the transport error
            (UNAVAILABLE when nothing listens, DEADLINE_EXCEEDED, ...).
        """
        return self._call(self._health, service, "", timeout)


def _pem(value: Optional[Union[bytes, str]]) -> Optional[bytes]:
    if value is None:
        return None
    return value.encode() if isinstance(value, str) else bytes(value)
