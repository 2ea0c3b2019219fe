"""Local receivers for the notification tests: the robots' HTTP APIs as their public docs
describe them, an SMTP server (aiosmtpd), and helpers to open alerts.

``RobotReceiver`` answers, on one port:

- WeCom group robot: ``POST /cgi-bin/webhook/send?key=K`` with ``{"msgtype": "text",
  "text": {"content": ...}}`` (or markdown); answers ``{"errcode": 0, "errmsg": "ok"}``.
- DingTalk robot: ``POST /robot/send?access_token=T&timestamp=MS&sign=S`` where S is
  base64(HMAC-SHA256(secret, f"{MS}\\n{secret}")), URL-encoded, and MS within an hour;
  body ``{"msgtype": "text", "text": {"content": ...}}`` or markdown with ``title``
  and ``text``; answers ``{"errcode": 0, "errmsg": "ok"}`` (a bad sign: errcode 310000).
- Feishu/Lark robot: ``POST /open-apis/bot/v2/hook/{token}`` with ``{"msg_type":
  "text", "content": {"text": ...}}`` or an interactive card; answers ``{"code": 0,
  "msg": "success"}``.
- An SMS gateway's HTTP API (SMSEagle's JSON-RPC): ``POST /jsonrpc/sms`` with
  ``{"method": "sms.send_sms", "params": {"to": ..., "message": ..., "access_token":
  ...}}``; answers ``{"result": {"message_id": N, "status": "ok"}}``.

Anything else it refuses (400, recorded in ``problems``), so a payload that drifts from
the documented shape fails the test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg

from tidefield.server.embedded.ports import free_port


@dataclass
class RobotMessage:
    robot: str  # wecom, dingtalk, feishu
    token: str
    text: str
    payload: dict[str, Any]


@dataclass
class RobotReceiver:
    dingtalk_secrets: dict[str, str] = field(default_factory=dict)  # token -> secret
    messages: list[RobotMessage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = receiver.take(self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _refuse(self, why: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.problems.append(why)
        return 400, {"errcode": 400, "errmsg": why}

    def take(self, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        try:
            payload = json.loads(body)
        except ValueError:
            return self._refuse("body is not JSON")
        if parts.path == "/cgi-bin/webhook/send":
            if not query.get("key"):
                return self._refuse("wecom: no key")
            kind = payload.get("msgtype")
            if kind not in ("text", "markdown") or not isinstance(
                    payload.get(kind, {}).get("content"), str):
                return self._refuse(f"wecom: bad payload {payload}")
            text = payload[kind]["content"]
            if len(text.encode()) > 4096:
                return self._refuse("wecom: content over 4096 bytes")
            self._keep(RobotMessage("wecom", query["key"], text, payload))
            return 200, {"errcode": 0, "errmsg": "ok"}
        if parts.path == "/robot/send":
            token = query.get("access_token", "")
            secret = self.dingtalk_secrets.get(token)
            if secret is None:
                return self._refuse("dingtalk: unknown access_token")
            timestamp, sign = query.get("timestamp", ""), query.get("sign", "")
            expected = base64.b64encode(hmac.new(
                secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
            ).decode()
            fresh = timestamp.isdigit() and abs(time.time() * 1000 - int(timestamp)) < 3600_000
            if not fresh or not hmac.compare_digest(sign, expected):
                with self.lock:
                    self.problems.append("dingtalk: bad sign")
                return 200, {"errcode": 310000, "errmsg": "sign not match"}
            kind = payload.get("msgtype")
            if kind == "text" and isinstance(payload.get("text", {}).get("content"), str):
                text = payload["text"]["content"]
            elif kind == "markdown" and isinstance(payload.get("markdown", {}).get("text"),
                                                   str) and payload["markdown"].get("title"):
                text = payload["markdown"]["text"]
            else:
                return self._refuse(f"dingtalk: bad payload {payload}")
            self._keep(RobotMessage("dingtalk", token, text, payload))
            return 200, {"errcode": 0, "errmsg": "ok"}
        if parts.path.startswith("/open-apis/bot/v2/hook/"):
            token = parts.path.rsplit("/", 2)[-2] if parts.path.endswith("/") \
                else parts.path.rsplit("/", 1)[-1]
            if payload.get("msg_type") == "text" and isinstance(
                    payload.get("content", {}).get("text"), str):
                text = payload["content"]["text"]
            elif payload.get("msg_type") == "interactive" and isinstance(
                    payload.get("card"), dict):
                text = json.dumps(payload["card"], ensure_ascii=False)
            else:
                return self._refuse(f"feishu: bad payload {payload}")
            self._keep(RobotMessage("feishu", token, text, payload))
            return 200, {"code": 0, "msg": "success", "data": {}}
        if parts.path == "/jsonrpc/sms":  # an SMS gateway (SMSEagle's JSON-RPC API)
            params = payload.get("params", {})
            if payload.get("method") != "sms.send_sms" or not params.get("to") \
                    or not isinstance(params.get("message"), str) \
                    or not params.get("access_token"):
                return self._refuse(f"sms: bad payload {payload}")
            self._keep(RobotMessage("sms", params["access_token"],
                                    f"{params['to']}: {params['message']}", payload))
            return 200, {"result": {"message_id": len(self.messages), "status": "ok"}}
        return self._refuse(f"unknown path {parts.path}")

    def _keep(self, message: RobotMessage) -> None:
        with self.lock:
            self.messages.append(message)


class MailBox:
    """A real SMTP server (aiosmtpd) on a free port; ``messages`` holds what it took."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[tuple[str, list[str], str]] = []  # (from, to, raw message)
        box = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any,
                                  envelope: Any) -> str:
                box.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                                     envelope.content.decode("utf-8", "replace")))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


def open_alert(conn: psycopg.Connection, site_id: str, *, rule: str = "hypoxia",
               severity: str = "critical", category: str = "event",
               message: str = "dissolved oxygen low") -> int:
    """An alert opened the way the detector does it: the row and its 'opened' event."""
    alert_id = conn.execute(
        """INSERT INTO alerts (site_id, rule, category, severity, message, opened_at,
                               updated_at, value, peak_value)
           VALUES (%s, %s, %s, %s, %s, now(), now(), 2.1, 1.9) RETURNING id""",
        (site_id, rule, category, severity, message)).fetchone()[0]
    conn.execute("INSERT INTO alert_events (alert_id, action, actor, value) "
                 "VALUES (%s, 'opened', 'detector', 2.1)", (alert_id,))
    return int(alert_id)


def alert_event(conn: psycopg.Connection, alert_id: int, action: str) -> None:
    if action == "closed":
        conn.execute("UPDATE alerts SET state = 'closed', closed_at = now() WHERE id = %s",
                     (alert_id,))
    conn.execute("INSERT INTO alert_events (alert_id, action, actor) "
                 "VALUES (%s, %s, 'detector')", (alert_id, action))


class NotifierProcess:
    """`tidefield notify run` in a subprocess (its own session, so kill -9 hits only it)."""

    def __init__(self, database_url: str, log_path: Any, **settings: Any) -> None:
        env = {**os.environ, "TIDEFIELD_DATABASE_URL": database_url,
               "TIDEFIELD_LOG_LEVEL": "INFO"}
        env.update({f"TIDEFIELD_{k.upper()}": str(v) for k, v in settings.items()})
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115  # closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "tidefield.cli", "notify", "run"],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def kill(self, signum: int = signal.SIGKILL) -> None:
        os.killpg(self.proc.pid, signum)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
        self._log.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_started(self, database_url: str, timeout: float = 60) -> None:
        """Until its cursor exists: events committed before that are history, not news
        (a loaded machine takes seconds to import and connect)."""
        def started() -> bool:
            assert self.alive(), Path(self.log_path).read_text()[-3000:]
            with psycopg.connect(database_url) as conn:
                return conn.execute("SELECT count(*) FROM notify_cursor").fetchone()[0] == 1
        wait_until(started, timeout, "the notifier's start")


def wait_until(condition: Any, timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise TimeoutError(f"waited {timeout} s for {what}")
