"""The generated protobuf and gRPC modules, with a useful error when they are missing."""

try:
    from cka.v1 import similarity_pb2 as pb
    from cka.v1 import similarity_pb2_grpc as pb_grpc
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "cka: the generated gRPC stubs (cka.v1.similarity_pb2) are not on the import path; "
        "run `eval \"$(bash client/python/build.sh)\"` from the ckad repository, which "
        "generates them into build/python-stubs and sets PYTHONPATH"
    ) from error

__all__ = ["pb", "pb_grpc"]
