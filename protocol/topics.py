"""The MQTT topic grammar, parsed in one place by one compiled regex.

    tf/v1/{site}/{device}/up            telemetry batches from a device
    tf/v1/{site}/{device}/status        birth and last will (retained)
    tf/v1/{site}/{device}/down/{...}    configuration and commands to a device
    tf/v1/{site}/{device}/down/receipt  what ingest has stored of the device's batches
    tf/v1/{site}/{device}/reply/{...}   a device's answers to them (protocol/control.py)
    tf/v1/{site}/alerts                 alerts raised for a site
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from .errors import BadTopic

PREFIX = "tf/v1"
ID_PATTERN = r"[a-z0-9][a-z0-9-]{0,62}"
_ID = re.compile(rf"^{ID_PATTERN}$")

_TOPIC = re.compile(
    rf"^tf/v1/(?P<site>{ID_PATTERN})/"
    rf"(?:(?P<alerts>alerts)|(?P<device>{ID_PATTERN})/(?P<channel>up|status|down|reply)"
    rf"(?:/(?P<rest>[^#+]+))?)$"
)


class Channel(StrEnum):
    UP = "up"
    STATUS = "status"
    DOWN = "down"
    REPLY = "reply"
    ALERTS = "alerts"


@dataclass(frozen=True, slots=True)
class Topic:
    site: str
    device: str | None
    channel: Channel
    rest: str | None = None  # the part after down/ or reply/, e.g. "config"

    def __str__(self) -> str:
        if self.channel is Channel.ALERTS:
            return f"{PREFIX}/{self.site}/alerts"
        base = f"{PREFIX}/{self.site}/{self.device}/{self.channel}"
        return f"{base}/{self.rest}" if self.rest else base


def parse_topic(topic: str) -> Topic:
    """Parse a concrete topic; BadTopic says what is wrong with it."""
    match = _TOPIC.match(topic)
    if match is None:
        raise BadTopic(f"topic {topic!r} does not follow "
                       f"tf/v1/{{site}}/{{device}}/up|status|down|reply")
    if match["alerts"]:
        return Topic(match["site"], None, Channel.ALERTS)
    channel = Channel(match["channel"])
    rest = match["rest"]
    if rest is not None and channel not in (Channel.DOWN, Channel.REPLY):
        raise BadTopic(f"topic {topic!r}: only down/ and reply/ topics have sub-topics")
    return Topic(match["site"], match["device"], channel, rest)


def check_id(value: str, what: str = "id") -> str:
    if not _ID.match(value):
        raise BadTopic(f"{what} {value!r} must match {ID_PATTERN}")
    return value


def up_topic(site: str, device: str) -> str:
    return f"{PREFIX}/{check_id(site, 'site')}/{check_id(device, 'device')}/up"


def status_topic(site: str, device: str) -> str:
    return f"{PREFIX}/{check_id(site, 'site')}/{check_id(device, 'device')}/status"


def down_topic(site: str, device: str, rest: str) -> str:
    return f"{PREFIX}/{check_id(site, 'site')}/{check_id(device, 'device')}/down/{rest}"


RECEIPT = "receipt"  # the down/ sub-topic of receipts


def receipt_topic(site: str, device: str) -> str:
    return down_topic(site, device, RECEIPT)


def reply_topic(site: str, device: str, rest: str) -> str:
    return f"{PREFIX}/{check_id(site, 'site')}/{check_id(device, 'device')}/reply/{rest}"


def alerts_topic(site: str) -> str:
    return f"{PREFIX}/{check_id(site, 'site')}/alerts"


# Subscriptions (wildcards) used by consumers.
ALL_UP = f"{PREFIX}/+/+/up"
# the same as an MQTT v5 shared subscription, of any group (ingest's workers share one)
ALL_UP_SHARED = f"$share/+/{ALL_UP}"
ALL_STATUS = f"{PREFIX}/+/+/status"
ALL_ALERTS = f"{PREFIX}/+/alerts"
ALL_RECEIPTS = f"{PREFIX}/+/+/down/{RECEIPT}"
# what the control service sends (protocol/control.py): configuration and commands, and
# nothing else of down/ (a forged receipt would make an agent drop unsaved batches)
ALL_CONFIGS = f"{PREFIX}/+/+/down/config"
ALL_COMMANDS = f"{PREFIX}/+/+/down/command"
ALL_REPLIES = f"{PREFIX}/+/+/reply/#"
