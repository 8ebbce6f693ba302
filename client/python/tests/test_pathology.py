"""bench/pathology.py, "CKA reveals network pathology" through ckad: its --quick run against a
real ckad trains a shallow and a deep MLP on digits, and prints for each network exactly the
blocks that GetSimilarity's block summary answers for its session."""

from __future__ import annotations

import os
import re
import sys

from conftest import ROOT, require

sys.path.insert(0, os.path.join(ROOT, "bench"))
import pathology  # noqa: E402


def test_the_quick_run_prints_the_blocks_ckad_finds(ckad, client, session_id, capsys):
    require("torch")
    require("sklearn")
    assert pathology.main(["--quick", "--address", ckad.address, "--session", session_id,
                           "--threshold", "0.9"]) == 0
    out = capsys.readouterr().out
    print(out)
    m = client.similarity(session_id, block_threshold=0.9)
    for name, depth in (("shallow", 2), ("deep", 8)):
        line = re.search(rf"^  {name}: largest block (\d+) of {depth} layers .*; blocks (.*)$",
                         out, re.M)
        assert line, f"no line for {name}"
        mine = [b for b in m.blocks if b.source == name]
        assert int(line.group(1)) == max((b.length for b in mine), default=1)
        shown = re.findall(r"(fc\d+)-(fc\d+) \(mean", line.group(2))
        assert shown == [(b.first_stream.split("/")[1], b.last_stream.split("/")[1])
                         for b in mine]
        warned = re.search(rf"^  WARNING: {name}: ", out, re.M) is not None
        assert warned == any(b.warning for b in mine)
    client.delete_session(session_id)
