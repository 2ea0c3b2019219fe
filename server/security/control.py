"""A client of Mosquitto's dynamic-security API (``$CONTROL/dynamic-security/v1``): the one
module of ``tidefield devices ...`` that talks to the broker.

A request is ``{"commands": [...]}`` published at QoS 1 by a login whose role may write the
control topic (``svc_admin``); the plugin answers on ``.../v1/response`` with one entry per
command, in order, each with ``error`` when it failed. Each request carries a
``correlationData`` that its answer echoes, so an answer is never taken for another's.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tidefield.protocol import mqtt

from .accounts import CONTROL_RESPONSE_TOPIC, CONTROL_TOPIC

if TYPE_CHECKING:
    import paho.mqtt.client as paho
    from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
MAX_COMMANDS = 200  # per request: well under the broker's max_packet_size


class ControlError(RuntimeError):
    """The broker could not be reached, refused the admin login, or did not answer."""


class DynsecControl:
    """``with DynsecControl(url) as control: control.run([...])``."""

    def __init__(self, url: str, *, ca_file: str | None = None,
                 timeout_s: float = TIMEOUT_S) -> None:
        self.address = mqtt.parse_mqtt_url(url, ca_file=ca_file)
        self.timeout_s = timeout_s
        self._cond = threading.Condition()
        self._connack: int | None = None
        self._suback: list[int] | None = None
        self._answers: dict[str, list[dict[str, Any]]] = {}
        self._client = mqtt.new_client(f"tidefield-admin-{secrets.token_hex(4)}", self.address)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def __enter__(self) -> DynsecControl:
        self._client.reconnect_delay_set(60, 60)  # one attempt is all we want
        try:
            self._client.connect(self.address.host, self.address.port, keepalive=30,
                                 clean_start=True)
        except OSError as exc:
            raise ControlError(f"broker {self.address} unreachable: {exc}") from exc
        self._client.loop_start()
        try:
            self._wait(lambda: self._connack is not None, "no CONNACK")
            if self._connack != 0:
                raise ControlError(f"broker {self.address} refused the admin login "
                                   f"(reason {self._connack:#x})")
            self._client.subscribe(CONTROL_RESPONSE_TOPIC, qos=1)
            self._wait(lambda: self._suback is not None, "no SUBACK")
            if any(code >= 0x80 for code in self._suback or ()):
                raise ControlError(f"{self.address.username} may not read "
                                   f"{CONTROL_RESPONSE_TOPIC}: not an admin login")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def run(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send the commands (in requests of at most ``MAX_COMMANDS``) and return the
        plugin's answer to each, in order."""
        answers: list[dict[str, Any]] = []
        for start in range(0, len(commands), MAX_COMMANDS):
            answers += self._request(commands[start:start + MAX_COMMANDS])
        return answers

    def _request(self, chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
        tag = secrets.token_hex(8)
        body = {"commands": [{**c, "correlationData": f"{tag}:{i}"}
                             for i, c in enumerate(chunk)]}
        self._client.publish(CONTROL_TOPIC, json.dumps(body).encode(), qos=1)
        self._wait(lambda: len(self._answers.get(tag, ())) >= len(chunk),
                   f"no answer to {len(chunk)} dynamic-security command(s)")
        with self._cond:
            return sorted(self._answers.pop(tag),
                          key=lambda a: int(a["correlationData"].split(":")[1]))

    # --- paho callbacks (network thread) ------------------------------------------------
    def _wait(self, predicate: Callable[[], bool], what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, self.timeout_s):
                raise ControlError(f"broker {self.address}: {what} within "
                                   f"{self.timeout_s:g} s")

    def _on_connect(self, client: paho.Client, userdata: object, flags: object,
                    reason_code: ReasonCode, properties: object) -> None:
        with self._cond:
            self._connack = reason_code.value
            self._cond.notify_all()

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int,
                      reason_codes: list[ReasonCode], properties: object) -> None:
        with self._cond:
            self._suback = [code.value for code in reason_codes]
            self._cond.notify_all()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage
                    ) -> None:
        try:
            responses = json.loads(message.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable dynamic-security answer", extra={"topic": message.topic})
            return
        with self._cond:
            for answer in responses:
                tag = str(answer.get("correlationData", "")).split(":")[0]
                self._answers.setdefault(tag, []).append(answer)
            self._cond.notify_all()
