"""Channels: how one message reaches one contact.

A contact's URL says which channel: ``tfhook://`` / ``tfhooks://`` is our signed JSON
webhook (Apprise's ``json://`` cannot sign); anything else is an Apprise URL
(``wecombot://``, ``dingtalk://``, ``feishu://``, ``lark://``, ``mailto://``, an SMS
provider's, ...), sent by Apprise in a worker thread (Apprise blocks).

The signed webhook: ``POST`` the JSON body with headers ``X-Tidefield-Timestamp`` (Unix
seconds), ``X-Tidefield-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." +
body)>`` and ``Idempotency-Key``; the receiver recomputes the HMAC and refuses a stale
timestamp, so a captured request cannot be replayed later. The secret is the URL's
``secret`` query parameter (never sent).

A URL's secrets never leave this module: ``describe(url)`` is what logs, the API and the
dashboard show (scheme and host only).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

log = logging.getLogger(__name__)

WEBHOOK_SCHEMES = ("tfhook", "tfhooks")
# the robots' public hosts, replaced by ``notify_robot_gateway`` when it is set
ROBOT_HOSTS = ("qyapi.weixin.qq.com", "oapi.dingtalk.com", "open.feishu.cn",
               "open.larksuite.com")
_ROBOT_URL_ATTRIBUTES = ("notify_url", "api_url", "webhook_url")


class ChannelError(Exception):
    """A channel did not take a message; ``retry`` says whether trying again may help."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class InvalidChannel(ValueError):
    """A contact's URL names no channel we can send through (the message says why,
    without the URL's secrets)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One rendered message: ``title`` and ``text`` for people, ``data`` for programs
    (the webhook's JSON body), ``key`` the idempotency key."""

    key: str
    title: str
    text: str
    data: Mapping[str, Any]
    markdown: bool = False


class Channel(Protocol):
    async def send(self, message: Message) -> None: ...

    async def close(self) -> None: ...


def describe(url: str) -> str:
    """What may be shown of a contact's URL: its scheme and host, no user, path or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme in ("wecombot", "dingtalk", "feishu", "lark"):
        host = ""  # their "host" is the robot's token
    return f"{parts.scheme}://{host}" if host else f"{parts.scheme}://"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *,
           max_age_s: float = 300.0, now: float | None = None) -> bool:
    """The receiver's side (also what the tests use): signature matches, timestamp fresh."""
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except ValueError:
        return False
    return abs(age) <= max_age_s and hmac.compare_digest(sign(secret, timestamp, body),
                                                         signature)


def parse_webhook(url: str) -> tuple[str, str]:
    """``tfhook(s)://...?secret=S`` -> (the http(s) URL to post to, the secret)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    secret = query.pop("secret", "")
    if len(secret) < 16:
        raise InvalidChannel("a tfhook:// URL needs ?secret= of at least 16 characters")
    if not parts.hostname:
        raise InvalidChannel("a tfhook:// URL needs a host")
    scheme = "https" if parts.scheme == "tfhooks" else "http"
    return urlunsplit((scheme, parts.netloc, parts.path or "/", urlencode(query), "")), secret


class SignedWebhook:
    """``tfhook://host:port/path?secret=S`` (http) or ``tfhooks://`` (https)."""

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.target, self.secret = parse_webhook(url)
        self.client = client

    async def send(self, message: Message) -> None:
        body = json.dumps(message.data, ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "X-Tidefield-Timestamp": timestamp,
                   "X-Tidefield-Signature": sign(self.secret, timestamp, body),
                   "Idempotency-Key": message.key}
        try:
            response = await self.client.post(self.target, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ChannelError(f"webhook unreachable: {type(exc).__name__}") from None
        if response.status_code >= 300:
            # 4xx other than 408/429 will not get better by retrying, but a receiver being
            # redeployed answers 404 for a while: nothing valid is dropped, so retry all
            raise ChannelError(f"webhook answered {response.status_code}")

    async def close(self) -> None:
        """The shared client is closed by its owner."""


class AppriseChannel:
    """Any Apprise URL, sent from a worker thread."""

    def __init__(self, url: str, pool: ThreadPoolExecutor, *, robot_gateway: str | None,
                 timeout_s: float) -> None:
        import apprise

        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if plugin is None:
            raise InvalidChannel(f"{describe(url)}: not a URL Apprise accepts")
        plugin.socket_read_timeout = timeout_s
        plugin.socket_connect_timeout = min(timeout_s, 5.0)
        if robot_gateway:
            _redirect(plugin, robot_gateway)
        if type(plugin).__name__ == "NotifyDingTalk":
            _sign_once(plugin)
        self.plugin = plugin
        self.pool = pool
        self.name = describe(url)

    async def send(self, message: Message) -> None:
        import apprise

        body_format = apprise.NotifyFormat.MARKDOWN if message.markdown else None
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(self.pool, lambda: self.plugin.notify(
            body=message.text, title=message.title, body_format=body_format))
        if not ok:
            raise ChannelError(f"{self.name} refused the message (the notifier's log has "
                               "the channel's answer)")

    async def close(self) -> None:
        """Apprise plugins hold no connections between sends."""


def _redirect(plugin: Any, gateway: str) -> None:
    """Point a robot plugin's endpoint at ``gateway`` (same path and query)."""
    base = urlsplit(gateway)
    for attribute in _ROBOT_URL_ATTRIBUTES:
        value = getattr(plugin, attribute, None)
        if not isinstance(value, str):
            continue
        parts = urlsplit(value)
        if parts.hostname in ROBOT_HOSTS:
            setattr(plugin, attribute, urlunsplit((base.scheme, base.netloc, parts.path,
                                                   parts.query, "")))


def _sign_once(plugin: Any) -> None:
    """Apprise (2.3) URL-quotes DingTalk's ``sign`` and then hands it to requests as a
    query parameter, which quotes it again; DingTalk decodes once and answers "sign not
    match" (errcode 310000, with HTTP 200, which Apprise takes for success). Hand
    requests the plain base64 so it is quoted exactly once. tests/integration/
    test_notify.py checks the signature as DingTalk documents it."""
    from urllib.parse import unquote

    signed = plugin.get_signature

    def get_signature() -> tuple[str, str]:
        timestamp, signature = signed()
        return timestamp, unquote(signature)

    plugin.get_signature = get_signature


class Channels:
    """Opens each contact's channel once and keeps it; owns the shared HTTP client and
    Apprise's threads."""

    def __init__(self, *, timeout_s: float, robot_gateway: str | None,
                 threads: int = 16) -> None:
        self.timeout_s = timeout_s
        self.robot_gateway = robot_gateway
        self.client = httpx.AsyncClient(timeout=timeout_s,
                                        limits=httpx.Limits(max_connections=256))
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="notify-apprise")
        self._open: dict[tuple[int, str], Channel] = {}

    def get(self, contact_id: int, url: str) -> Channel:
        key = (contact_id, url)
        channel = self._open.get(key)
        if channel is None:
            channel = open_channel(url, self.client, self.pool,
                                   robot_gateway=self.robot_gateway, timeout_s=self.timeout_s)
            self._open[key] = channel
        return channel

    async def close(self) -> None:
        await self.client.aclose()
        self.pool.shutdown(wait=False, cancel_futures=True)


def open_channel(url: str, client: httpx.AsyncClient, pool: ThreadPoolExecutor, *,
                 robot_gateway: str | None, timeout_s: float) -> Channel:
    scheme = urlsplit(url).scheme
    if scheme in WEBHOOK_SCHEMES:
        return SignedWebhook(url, client)
    return AppriseChannel(url, pool, robot_gateway=robot_gateway, timeout_s=timeout_s)


def check_url(url: str) -> None:
    """Raise ``InvalidChannel`` unless ``url`` opens a channel (no message is sent)."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidChannel("a contact's url looks like scheme://...")
    if urlsplit(url).scheme in WEBHOOK_SCHEMES:
        parse_webhook(url)
        return
    import apprise

    if apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
        raise InvalidChannel(f"{describe(url)}: not a URL Apprise accepts")
