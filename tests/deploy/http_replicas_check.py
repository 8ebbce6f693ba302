"""The JSON API across ckad replicas: the checks router_test.sh runs against each replica's
HTTPS address and the router's.

Every replica runs with --http-grpc-target (the router) and --http-peers (every replica), so
that any of them answers for every session. Each subcommand exits 1 with a FAIL line naming
what differs. Tokens come from the make_secrets.sh directory (--secrets).

  http_replicas_check.py --secrets DIR listing --url U... --owners S=REPLICA,... [--down R]
  http_replicas_check.py --secrets DIR matrices --url U... --expect DIR
  http_replicas_check.py --secrets DIR unavailable --url U... --errors DIR
  http_replicas_check.py --secrets DIR watch --url U --session S --measure M --then CMD
  http_replicas_check.py --secrets DIR auth --url U... --session S
"""

import argparse
import http.client
import json
import math
import os
import ssl
import struct
import subprocess
import sys
import time
import urllib.parse

# Only catches hangs: every wait below ends as soon as its event is seen.
HANG_DEADLINE_S = 60


def fail(message: str) -> None:
    print(f"FAIL: {message}")
    sys.exit(1)


class Api:
    """HTTPS requests to one ckad (or the router) that trust the secrets' CA."""

    def __init__(self, url: str, secrets: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.url = url
        self.host, self.port = parsed.hostname, parsed.port
        self.context = ssl.create_default_context(cafile=os.path.join(secrets, "ca.crt"))

    def connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.context,
                                           timeout=HANG_DEADLINE_S)

    def request(self, path: str, token: str | None, method: str = "GET"):
        """Returns (status, body as text)."""
        connection = self.connect()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read().decode()
        connection.close()
        return response.status, body

    def json(self, path: str, token: str | None, want_status: int = 200):
        status, body = self.request(path, token)
        if status != want_status:
            fail(f"{self.url}{path}: HTTP {status}, expected {want_status}: {body[:300]}")
        return json.loads(body)


def bits(value) -> bytes:
    """The double's bit pattern; None (ckactl's NaN) and "NaN" (protobuf's) as one NaN."""
    if value is None or value == "NaN":
        value = math.nan
    return struct.pack("<d", float(value))


def same_matrix(api_matrix: dict, ckactl_matrix: dict) -> str | None:
    """Returns why the JSON API's SimilarityMatrix differs from ckactl's JSON, or None."""
    for key in ("session_id", "measure", "rows", "cols"):
        if api_matrix[key] != ckactl_matrix[key]:
            return f"{key}: {api_matrix[key]} != {ckactl_matrix[key]}"
    want = [v for row in ckactl_matrix["values"] for v in row]
    got = api_matrix["values"]
    if len(got) != len(want):
        return f"{len(got)} values, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if bits(g) != bits(w):
            return f"values[{i}] = {g!r}, gRPC through the router says {w!r}"
    want_batches = [int(b) for row in ckactl_matrix["batches"] for b in row]
    if [int(b) for b in api_matrix["batches"]] != want_batches:
        return f"batches {api_matrix['batches']} != {want_batches}"
    return None


def listing(args, tokens) -> None:
    owners = dict(pair.split("=", 1) for pair in args.owners.split(","))
    for url in args.url:
        answer = Api(url, args.secrets).json("/api/v1/sessions", tokens["admin"])
        ids = [s["session_id"] for s in answer["sessions"]]
        want = sorted(s for s, r in owners.items() if r != args.down)
        if sorted(ids) != want:
            fail(f"{url}: lists {sorted(ids)}, expected each of {want} once")
        for s in answer["sessions"]:
            if s["replica"] != owners[s["session_id"]]:
                fail(f"{url}: {s['session_id']} listed on {s['replica']}, "
                     f"it lives on {owners[s['session_id']]}")
        unanswered = [(u["replica"], u["code"]) for u in answer["unanswered"]]
        if args.down is None:
            if unanswered or "message" in answer:
                fail(f"{url}: every replica is up, but the answer says {answer}")
        else:
            if unanswered != [(args.down, "UNAVAILABLE")]:
                fail(f"{url}: unanswered {unanswered}, expected [({args.down!r}, UNAVAILABLE)]")
            if args.down not in answer.get("message", ""):
                fail(f"{url}: the message does not name {args.down}: {answer.get('message')}")
        answered = sorted(r["replica"] for r in answer["replicas"])
        want_answered = sorted(set(owners.values()) - {args.down})
        if not set(want_answered) <= set(answered):
            fail(f"{url}: replicas that answered {answered}, expected {want_answered}")
    print(f"OK: {len(args.url)} addresses list the sessions {want} each once"
          + (f", and name {args.down} as not answering" if args.down else ""))


def matrices(args, tokens) -> None:
    checked = nan = 0
    for name in sorted(os.listdir(args.expect)):
        session, measure, _ = name.rsplit(".", 2)
        with open(os.path.join(args.expect, name)) as f:
            want = json.load(f)
        nan += sum(v is None for row in want["values"] for v in row)
        query = urllib.parse.urlencode({"measure": measure})
        for url in args.url:
            got = Api(url, args.secrets).json(
                f"/api/v1/sessions/{session}/similarity?{query}", tokens["reader"])
            why = same_matrix(got, want)
            if why:
                fail(f"{url}: {session} {measure}: {why}")
            checked += 1
    if nan == 0:
        fail("no expected matrix holds a NaN: the NaN case went unchecked")
    print(f"OK: {checked} matrices through the JSON API equal gRPC through the router bit for "
          f"bit ({nan} NaN entries among the expected)")


def unavailable(args, tokens) -> None:
    for name in sorted(os.listdir(args.errors)):
        session = name
        with open(os.path.join(args.errors, name)) as f:
            grpc_error = f.read()
        for url in args.url:
            answer = Api(url, args.secrets).json(
                f"/api/v1/sessions/{session}/similarity?measure=lin", tokens["admin"], 503)
            if answer["code"] != "UNAVAILABLE" or not answer["message"]:
                fail(f"{url}: {session}: {answer}, expected UNAVAILABLE with a message")
            if answer["message"] not in grpc_error:
                fail(f"{url}: {session}: message {answer['message']!r} is not gRPC's "
                     f"{grpc_error.strip()!r}")
    print(f"OK: the sessions of the dead replica answer 503 with gRPC's UNAVAILABLE message "
          f"through {len(args.url)} addresses")


def read_event(response) -> tuple[str, str]:
    """Reads one server-sent event: (event name, data), skipping comments."""
    name, data = "message", ""
    while True:
        line = response.readline()
        if not line:
            fail("the event stream ended")
        line = line.decode().rstrip("\n")
        if line == "":
            if data:
                return name, data
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(": ")
        if field == "event":
            name = value
        elif field == "data":
            data += value


def watch(args, tokens) -> None:
    api = Api(args.url[0], args.secrets)
    connection = api.connect()
    query = urllib.parse.urlencode({"measure": args.measure})
    connection.request("GET", f"/api/v1/sessions/{args.session}/watch?{query}",
                       headers={"Authorization": f"Bearer {tokens['reader']}"})
    response = connection.getresponse()
    if response.status != 200:
        fail(f"watch {args.session} at {api.url}: HTTP {response.status}: {response.read()[:300]}")
    name, data = read_event(response)
    if name != "matrix":
        fail(f"watch: first event {name}: {data}")
    first = json.loads(data)
    # The new batch goes in through the router; then gRPC says what the matrix is now.
    expected_file = subprocess.run(args.then, shell=True, check=True, capture_output=True,
                                   text=True).stdout.strip()
    with open(expected_file) as f:
        want = json.load(f)
    if same_matrix(first, want) is None:
        fail("watch: the batch sent did not change the matrix; the check would prove nothing")
    deadline = time.monotonic() + HANG_DEADLINE_S
    while time.monotonic() < deadline:
        name, data = read_event(response)
        if name != "matrix":
            fail(f"watch: event {name}: {data}")
        if same_matrix(json.loads(data), want) is None:
            connection.close()
            print(f"OK: a watch of {args.session} at {api.url} (not its replica) got the new "
                  "batch's matrix, equal to gRPC through the router")
            return
    fail("watch: no event showed the new batch")


def auth(args, tokens) -> None:
    session = args.session
    reads = ["/api/v1/sessions", f"/api/v1/sessions/{session}",
             f"/api/v1/sessions/{session}/similarity?measure=lin",
             f"/api/v1/sessions/{session}/watch?measure=lin", "/metrics"]
    for url in args.url:
        api = Api(url, args.secrets)
        for path in reads:
            status, body = api.request(path, None)
            if status != 401:
                fail(f"{url}{path} without a token: HTTP {status}, expected 401: {body[:200]}")
        for path in reads[:3] + reads[4:]:
            status, body = api.request(path, tokens["reader"])
            if status != 200:
                fail(f"{url}{path} with a reader token: HTTP {status}: {body[:200]}")
        status, body = api.request("/api/v1/sessions", tokens["reader"], method="POST")
        if status != 405:
            fail(f"{url}: POST /api/v1/sessions with a reader token: HTTP {status}, expected 405")
    print(f"OK: through {len(args.url)} addresses, no token is 401 on every route; a reader "
          "token reads sessions, matrices and /metrics and cannot create")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--secrets", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("listing")
    p.add_argument("--url", nargs="+", required=True)
    p.add_argument("--owners", required=True)
    p.add_argument("--down")
    p = sub.add_parser("matrices")
    p.add_argument("--url", nargs="+", required=True)
    p.add_argument("--expect", required=True)
    p = sub.add_parser("unavailable")
    p.add_argument("--url", nargs="+", required=True)
    p.add_argument("--errors", required=True)
    p = sub.add_parser("watch")
    p.add_argument("--url", nargs=1, required=True)
    p.add_argument("--session", required=True)
    p.add_argument("--measure", required=True)
    p.add_argument("--then", required=True)
    p = sub.add_parser("auth")
    p.add_argument("--url", nargs="+", required=True)
    p.add_argument("--session", required=True)
    args = parser.parse_args()
    tokens = {}
    for role in ("admin", "reader"):
        with open(os.path.join(args.secrets, f"{role}.token")) as f:
            tokens[role] = f.read().strip()
    {"listing": listing, "matrices": matrices, "unavailable": unavailable, "watch": watch,
     "auth": auth}[args.command](args, tokens)


if __name__ == "__main__":
    main()
