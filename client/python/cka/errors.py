"""CkaError: the one exception type of the package."""

from __future__ import annotations

import grpc

_CODES = {code.value[0]: code for code in grpc.StatusCode}


def status_code(value: int) -> grpc.StatusCode:
    """Returns the grpc.StatusCode of the google.rpc.Code number `value` (UNKNOWN if none)."""
    return _CODES.get(value, grpc.StatusCode.UNKNOWN)


class CkaError(Exception):
    """A failed call or a refused request.

    Attributes
    ----------
    code : grpc.StatusCode
        The gRPC status code (the server's, or the client's own check: INVALID_ARGUMENT for a
        bad batch, RESOURCE_EXHAUSTED for one over the message size, DEADLINE_EXCEEDED for a
        flush that timed out, FAILED_PRECONDITION after close).
    message : str
        The server's message (it names the field, the value and what was expected).
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "CkaError":
        """Returns the CkaError of a failed gRPC call."""
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "")
