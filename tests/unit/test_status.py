"""`tidefield status`: every part of `tidefield up` in one table with its health, checked
against the process and the part itself (a real HTTP server and a real listening port)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from tidefield.server.status import collect, render


class _Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # (the http.server API names it)
        body = json.dumps({"detail": {"database": True, "broker": False, "pending": 0}})
        self.send_response(503)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args) -> None:
        pass


def test_each_part_shows_its_state_restarts_and_health(tmp_path):
    ingest = HTTPServer(("127.0.0.1", 0), _Healthz)
    threading.Thread(target=ingest.serve_forever, daemon=True).start()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: nobody answers there
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        children = {
            "broker": {"state": "running", "pid": sleeper.pid, "restarts": 1,
                       "url": "mqtt://127.0.0.1", "health": {
                           "tcp": f"127.0.0.1:{listener.getsockname()[1]}"}},
            "ingest": {"state": "running", "pid": sleeper.pid, "restarts": 0,
                       "url": "http://ingest", "health": {
                           "http": f"http://127.0.0.1:{ingest.server_port}/healthz"}},
            "api": {"state": "running", "pid": sleeper.pid, "restarts": 0, "url": None,
                    "health": {"tcp": f"127.0.0.1:{closed.getsockname()[1]}"}},
            "fleet": {"state": "running", "pid": sleeper.pid, "restarts": 0, "url": None,
                      "health": None},
            "detector": {"state": "running", "pid": 2**22 + 7, "restarts": 0, "url": None,
                         "health": None}}
        (tmp_path / "up.json").write_text(json.dumps({
            "supervisor_pid": os.getpid(), "children": children}))
        report = collect(tmp_path)
        parts = report["children"]
        assert parts["broker"]["health"] == "ok"
        assert parts["ingest"]["health"] == "503: broker down"
        assert parts["api"]["health"] == "not listening"
        assert parts["fleet"]["health"] == "-"
        assert parts["detector"]["state"] == "stopped"  # its pid is gone
        lines = render(report).splitlines()
        header = next(line for line in lines if line.split()[:1] == ["part"])
        assert header.split() == ["part", "state", "pid", "restarts", "health", "where"]
        broker = next(line for line in lines if line.split()[:1] == ["broker"])
        assert broker.split()[:5] == ["broker", "running", str(sleeper.pid), "1", "ok"]
    finally:
        sleeper.kill()
        sleeper.wait()
        ingest.shutdown()
        listener.close()
        closed.close()
