"""python -m cka: a few read-only looks at ckad from a shell, over cka.Client.

    python -m cka [--address HOST:PORT] [--token TOKEN] sessions [--format table|json]
    python -m cka [--address HOST:PORT] [--token TOKEN] matrix SESSION [--measure M]
        [--rows A,B] [--cols C,D] [--format table|csv|json]

A convenience for notebook and script users who have the Python package but not ckactl; it
is not ckactl's twin (ckactl has every call, TLS files and more formats). The token may also
come from $CKA_TOKEN. Exit status: 0, or 1 with the gRPC code and ckad's message on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import List, Optional, TextIO

from cka.client import Client, SimilarityMatrix
from cka.errors import CkaError


def _names(value: Optional[str]) -> Optional[List[str]]:
    return [v for v in value.split(",") if v] if value else None


def _number(value: float) -> Optional[float]:
    return None if math.isnan(value) else value


def print_sessions(client: Client, form: str, out: TextIO) -> None:
    """Prints ListSessions: one row per session, or a JSON list."""
    sessions = client.list_sessions()
    if form == "json":
        json.dump([{"session_id": s.session_id, "streams": list(s.streams),
                    "measures": [m.name for m in s.measures],
                    "batches_applied": s.batches_applied,
                    "batches_pending": s.batches_pending, "state_bytes": s.state_bytes}
                   for s in sessions], out, indent=1)
        out.write("\n")
        return
    out.write(f"{'SESSION':<24}{'STREAMS':>8}{'BATCHES':>10}{'PENDING':>9}  MEASURES\n")
    for s in sessions:
        out.write(f"{s.session_id:<24}{len(s.streams):>8}{s.batches_applied:>10}"
                  f"{s.batches_pending:>9}  {', '.join(m.name for m in s.measures)}\n")


def print_matrix(m: SimilarityMatrix, form: str, out: TextIO) -> None:
    """Prints a matrix: a table (4 decimals, '-' for no value), CSV (full precision, empty
    for no value) or JSON (values and batches row by row, null for no value)."""
    if form == "json":
        json.dump({"session_id": m.session_id, "measure": m.measure, "rows": m.rows,
                   "cols": m.cols,
                   "values": [[_number(v) for v in row] for row in m.values.tolist()],
                   "batches": m.batches.tolist()}, out, indent=1)
        out.write("\n")
    elif form == "csv":
        out.write(",".join([""] + m.cols) + "\n")
        for name, row in zip(m.rows, m.values.tolist()):
            out.write(",".join([name] + ["" if math.isnan(v) else repr(v) for v in row]) + "\n")
    else:
        width = max([len(c) for c in m.cols] + [7]) + 2
        first = max([len(r) for r in m.rows] + [4]) + 2
        out.write(f"{m.measure}\n" + " " * first + "".join(f"{c:>{width}}" for c in m.cols)
                  + "\n")
        for name, row in zip(m.rows, m.values.tolist()):
            out.write(f"{name:<{first}}" + "".join(
                f"{'-' if math.isnan(v) else format(v, '.4f'):>{width}}" for v in row) + "\n")


def main(argv: Optional[List[str]] = None, out: TextIO = sys.stdout) -> int:
    """Runs the command line `argv`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m cka", description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:50051", help="ckad's host:port")
    parser.add_argument("--token", default=os.environ.get("CKA_TOKEN"),
                        help="bearer token (default: $CKA_TOKEN)")
    commands = parser.add_subparsers(dest="command", required=True)
    sessions = commands.add_parser("sessions", help="list the sessions")
    sessions.add_argument("--format", choices=("table", "json"), default="table")
    matrix = commands.add_parser("matrix", help="print a session's similarity matrix")
    matrix.add_argument("session")
    matrix.add_argument("--measure", help="a measure of the session (default: its first)")
    matrix.add_argument("--rows", help="streams, comma-separated (default: all)")
    matrix.add_argument("--cols", help="streams, comma-separated (default: all)")
    matrix.add_argument("--format", choices=("table", "csv", "json"), default="table")
    args = parser.parse_args(argv)
    try:
        with Client(args.address, token=args.token) as client:
            if args.command == "sessions":
                print_sessions(client, args.format, out)
            else:
                print_matrix(client.similarity(args.session, args.measure, _names(args.rows),
                                               _names(args.cols)), args.format, out)
    except CkaError as error:
        print(f"python -m cka: {error.code.name}: {error.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
