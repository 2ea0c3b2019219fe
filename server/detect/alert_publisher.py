"""The detector's one connection to the broker: alert notices on ``tf/v1/{site}/alerts``.

paho stays in this module; the service hands it ``AlertNotice`` objects and learns how
many of them the broker acknowledged (QoS 1 PUBACK), in order. What is not acknowledged
stays unpublished in the service's outbox (``alert_events`` past the checkpoint's
``published_event_id``) and is offered again at the next step, so a broker outage delays
notices but loses none.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING

from tidefield.protocol import mqtt
from tidefield.protocol.codec import JSON, encode_alert
from tidefield.protocol.messages import AlertNotice
from tidefield.protocol.topics import alerts_topic

if TYPE_CHECKING:
    import paho.mqtt.client as paho
    from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 10.0  # longest wait for the PUBACKs of one step's notices
CONNECT_TIMEOUT_S = 5.0


class AlertPublisher:
    def __init__(self, address: mqtt.BrokerAddress, partition: str) -> None:
        self.address = address
        client_id = f"tidefield-detector-{partition.replace('/', 'of')}-{secrets.token_hex(3)}"
        self._client = mqtt.new_client(client_id, address)
        self._connected = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.reconnect_delay_set(1, 30)
        mqtt.connect(self._client, address, clean_start=True)
        self._client.loop_start()
        self._warned = False

    def _on_connect(self, client: paho.Client, userdata: object, flags: object,
                    reason_code: ReasonCode, properties: object) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the detector", extra={"broker": str(self.address),
                                                               "reason": str(reason_code)})
            return
        self._connected.set()
        self._warned = False

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object,
                       reason_code: ReasonCode, properties: object) -> None:
        self._connected.clear()

    def publish(self, notices: list[AlertNotice]) -> int:
        """Publish in order; returns how many leading notices the broker acknowledged."""
        if not notices:
            return 0
        if not self._connected.wait(CONNECT_TIMEOUT_S):
            if not self._warned:
                log.warning("broker unreachable; alert notices wait in the outbox",
                            extra={"broker": str(self.address), "pending": len(notices)})
                self._warned = True
            return 0
        props = mqtt.publish_properties(JSON)
        infos = []
        for notice in notices:
            info = self._client.publish(alerts_topic(notice.site), encode_alert(notice),
                                        qos=1, properties=props)
            if info.rc != 0:
                break
            infos.append(info)
        deadline = time.monotonic() + ACK_TIMEOUT_S
        acknowledged = 0
        for info in infos:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                break
            if not info.is_published():
                break
            acknowledged += 1
        return acknowledged

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
