"""Coverage-guided fuzzing of the codec (atheris, a dev dependency), for a bounded
time: no input may raise anything but a ProtocolError. Marked slow; about 40 s."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "support" / "atheris_codec.py"
SEEDS = [b'{"v":1,"site":"oc-001","device":"oc-001-sonde","seq":1,"readings":'
         b'[{"m":"salinity","t":1795000000000,"v":30.5}]}',
         b'{"v":1,"site":"oc-001","device":"oc-001-sonde","state":"online",'
         b'"t":1795000000000}']


@pytest.mark.slow
def test_atheris_finds_nothing_in_the_codec(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n, seed in enumerate(SEEDS):
        (corpus / f"seed{n}").write_bytes(b"\x01" + seed)
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(corpus), "-max_total_time=30",
         # One input allocating more than 256 MB is a finding; the process's whole RSS
         # may grow past 1 GB over ~10^5 inputs (the fuzzer's own coverage tables and
         # Python's arenas: the input CI's run stopped on used 46 MB alone), so its limit
         # is set where only a real leak reaches it.
         "-malloc_limit_mb=256", "-rss_limit_mb=3072", "-max_len=4096",
         f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Done" in run.stderr, run.stderr[-2000:]
    executed = [line for line in run.stderr.splitlines() if line.startswith("Done ")]
    print(executed)  # "Done N runs in 30 second(s)"
