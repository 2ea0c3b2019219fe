"""Broker addresses and paho-mqtt client construction, shared by every process that talks
to the broker (ingest consumer, edge publisher, fleet simulator, detector).

paho objects stay inside the one module of each process that owns its connection; those
modules hand our own ``Message`` type to the rest of the code.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None  # trust this CA instead of the system's

    def __str__(self) -> str:  # never print the password
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_mqtt_url(url: str, *, ca_file: str | None = None) -> BrokerAddress:
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"broker URL {url!r} must look like mqtt://host:port or mqtts://host:port")
    return BrokerAddress(
        host=parts.hostname,
        port=parts.port or DEFAULT_PORTS[parts.scheme],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=parts.scheme == "mqtts",
        ca_file=ca_file,
    )


@dataclass(frozen=True, slots=True)
class Message:
    """A received message, as the rest of Tidefield sees it (never a paho object)."""

    topic: str
    payload: bytes
    content_type: str | None
    qos: int
    retain: bool
    mid: int
    # MQTT v5 request/response (protocol/control.py): where to answer, and what to echo
    response_topic: str | None = None
    correlation_data: bytes | None = None
    # the broker sent it before and it was not acknowledged (the receiver died or lost its
    # connection while it was in flight): what tells a possible poison message
    redelivered: bool = False


def to_message(msg: paho.MQTTMessage) -> Message:
    props = getattr(msg, "properties", None)
    content_type = getattr(props, "ContentType", None) if props is not None else None
    response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
    correlation = getattr(props, "CorrelationData", None) if props is not None else None
    return Message(msg.topic, bytes(msg.payload), content_type, msg.qos, bool(msg.retain),
                   msg.mid, response_topic, bytes(correlation) if correlation else None,
                   bool(msg.dup))


def publish_properties(content_type: str | None = None,
                       expiry_s: int | None = None, *, response_topic: str | None = None,
                       correlation_data: bytes | None = None) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if content_type:
        props.ContentType = content_type
    if expiry_s:
        props.MessageExpiryInterval = expiry_s
    if response_topic:
        props.ResponseTopic = response_topic
    if correlation_data:
        props.CorrelationData = correlation_data
    return props


def new_client(client_id: str, address: BrokerAddress, *, manual_ack: bool = False,
               will: tuple[str, bytes, bool] | None = None,
               will_content_type: str | None = None,
               client_class: type[paho.Client] = paho.Client) -> paho.Client:
    """An MQTT v5 client, configured but not connected (see ``connect``).
    ``client_class``: paho's ``Client`` or a subclass (ingest's receive path)."""
    client = client_class(CallbackAPIVersion.VERSION2, client_id=client_id,
                          protocol=MQTTProtocolVersion.MQTTv5, manual_ack=manual_ack)
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        context = ssl.create_default_context(cafile=address.ca_file)
        client.tls_set_context(context)
    if will is not None:
        topic, payload, retain = will
        client.will_set(topic, payload, qos=1, retain=retain,
                        properties=publish_properties(will_content_type))
    # Keep QoS 1 messages flowing without an artificial ceiling: ordering per client is
    # preserved by MQTT regardless, and acknowledgements gate the rest.
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    return client


def connect(client: paho.Client, address: BrokerAddress, *, clean_start: bool,
            session_expiry_s: int = 0, keepalive: int = 30) -> None:
    """Start connecting in the background (paho's loop thread must be running or started).

    A persistent session (clean_start False and an expiry) makes the broker queue QoS 1
    messages while this client is away.
    """
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if session_expiry_s:
        props.SessionExpiryInterval = session_expiry_s
    client.connect_async(address.host, address.port, keepalive=keepalive,
                         clean_start=clean_start, properties=props)


def probe(address: BrokerAddress, timeout_s: float = 2.0) -> str | None:
    """Connect, wait for the CONNACK, disconnect: None when the broker accepted the
    connection, else why not (unreachable, refused with a reason code, timed out)."""
    import secrets
    import threading

    answered = threading.Event()
    outcome: list[str | None] = []

    def on_connect(client: paho.Client, userdata: object, flags: object,
                   reason_code: ReasonCode, properties: object) -> None:
        outcome.append(None if not reason_code.is_failure else f"refused: {reason_code}")
        answered.set()

    client = new_client(f"tidefield-probe-{secrets.token_hex(4)}", address)
    client.on_connect = on_connect
    try:
        client.connect(address.host, address.port, keepalive=10, clean_start=True)
    except (OSError, ssl.SSLError) as exc:
        return f"unreachable: {exc}"
    client.loop_start()
    try:
        if not answered.wait(timeout_s):
            return f"no CONNACK within {timeout_s:g} s"
        return outcome[0]
    finally:
        client.disconnect()
        client.loop_stop()
