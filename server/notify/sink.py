"""A local receiver of the signed webhook (``tidefield notify sink``; ``tidefield up`` runs
one so a new user sees notifications flow without an account anywhere).

It does what a real receiver should: refuses a bad or stale signature (401), answers a
repeated ``Idempotency-Key`` 200 without acting on it again, and hands each new
notification to ``on_notification``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .channels import verify

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
REMEMBERED_KEYS = 100_000  # idempotency keys kept (oldest forgotten first)


class _Server(ThreadingHTTPServer):
    # socketserver's listen backlog of 5 drops connections a burst of concurrent senders
    # opens at once; the kernel's SYN retry then adds a whole second (bench/notify.py
    # saw its p99 at 1.2 s from that alone)
    request_queue_size = 256
    daemon_threads = True


class WebhookSink:
    def __init__(self, secret: str, on_notification: Callable[[dict[str, Any]], None], *,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.secret = secret
        self.on_notification = on_notification
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.lock = threading.Lock()
        self.received = 0  # requests with a good signature, repeats included
        self.refused = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server calls
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._answer(413, "too large")
                    return
                body = self.rfile.read(length)
                status, text = sink.take(self.headers.get("X-Tidefield-Timestamp", ""),
                                         self.headers.get("X-Tidefield-Signature", ""),
                                         self.headers.get("Idempotency-Key", ""), body)
                self._answer(status, text)

            def _answer(self, status: int, text: str) -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: each notification is reported by ``on_notification``."""

        self.server = _Server((host, port), Handler)
        self.server.daemon_threads = True
        self.host, self.port = host, int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-sink",
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"tfhook://{self.host}:{self.port}/?secret={self.secret}"

    @property
    def address(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def take(self, timestamp: str, signature: str, key: str, body: bytes) -> tuple[int, str]:
        if not verify(self.secret, timestamp, body, signature):
            with self.lock:
                self.refused += 1
            return 401, "bad or stale signature"
        try:
            data = json.loads(body)
        except ValueError:
            return 400, "not JSON"
        with self.lock:
            self.received += 1
            if key in self.seen:
                return 200, "already had it"
            self.seen[key] = None
            if len(self.seen) > REMEMBERED_KEYS:
                self.seen.popitem(last=False)
        self.on_notification(data)
        return 200, "ok"

    def start(self) -> WebhookSink:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
