"""A durable log between the broker and ingest, measured: NATS JetStream on this machine.

    .venv/bin/python bench/jetstream.py [--nats nats://127.0.0.1:4222] [--messages 20000]

The fleet's own 500-reading MessagePack batches (as `bench/ingest.py` sends them) are
1. published to a file-backed JetStream stream, each acknowledged once stored (the
   durability the edge's queue waits for), 256 in flight;
2. read back by a pull consumer in batches of 256, each acknowledged (what an ingest
   worker would do; a work-queue stream gives each message to one worker only);
3. the baseline, in the same run: core NATS (no storage) from publisher to one subscriber.
Rates are messages/s and readings/s, with ratios to the baseline. The stream is private to
the run (a random name) and deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from pathlib import Path

import nats
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import table
from bench.ingest import PER_BATCH, fleet_batches
from tidefield.protocol.codec import MSGPACK, encode_batch
from tidefield.protocol.registry import load_sites
from tidefield.protocol.topics import up_topic

IN_FLIGHT = 256


def encode(n: int, per_batch: int) -> tuple[list[tuple[str, bytes]], float]:
    """The messages, and the mean readings in one."""
    import threading

    batches = fleet_batches(load_sites(), threading.Event(), per_batch)
    out, readings = [], 0
    for _ in range(n):
        batch = next(batches)
        out.append((up_topic(batch.site, batch.device), encode_batch(batch, MSGPACK)))
        readings += len(batch.readings)
    return out, readings / n


def subject(prefix: str, topic: str) -> str:
    # MQTT's '/' levels are NATS' '.' tokens (what NATS' own MQTT gateway maps them to)
    return prefix + "." + topic.replace("/", ".")


async def core_nats(url: str, messages: list[tuple[str, bytes]], prefix: str) -> float:
    nc = await nats.connect(url)
    got = 0
    done = asyncio.Event()

    async def on_message(_msg) -> None:
        nonlocal got
        got += 1
        if got == len(messages):
            done.set()

    await nc.subscribe(prefix + ".>", cb=on_message, pending_msgs_limit=len(messages) + 1,
                       pending_bytes_limit=1 << 30)
    await nc.flush()
    began = time.perf_counter()
    for topic, payload in messages:
        await nc.publish(subject(prefix, topic), payload)
    await asyncio.wait_for(done.wait(), 300)
    seconds = time.perf_counter() - began
    await nc.close()
    return len(messages) / seconds


async def jetstream(url: str, messages: list[tuple[str, bytes]], prefix: str
                    ) -> tuple[float, float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    stream = prefix.replace(".", "_")
    await js.add_stream(StreamConfig(name=stream, subjects=[prefix + ".>"],
                                     storage=StorageType.FILE,
                                     retention=RetentionPolicy.WORK_QUEUE))
    try:
        began = time.perf_counter()
        pending: list[asyncio.Future] = []
        for topic, payload in messages:
            pending.append(await js.publish_async(subject(prefix, topic), payload))
            if len(pending) >= IN_FLIGHT:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        publish_rate = len(messages) / (time.perf_counter() - began)
        consumer = await js.pull_subscribe(prefix + ".>", durable="ingest", stream=stream)
        began = time.perf_counter()
        read = 0
        while read < len(messages):
            batch = await consumer.fetch(IN_FLIGHT, timeout=30)
            for msg in batch:
                await msg.ack()
            read += len(batch)
        consume_rate = read / (time.perf_counter() - began)
    finally:
        await js.delete_stream(stream)
        await nc.close()
    return publish_rate, consume_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--per-batch", type=int, default=PER_BATCH)
    args = parser.parse_args()
    messages, readings = encode(args.messages, args.per_batch)
    prefix = f"bench{secrets.token_hex(4)}"
    base = asyncio.run(core_nats(args.nats, messages, prefix + "core"))
    stored, consumed = asyncio.run(jetstream(args.nats, messages, prefix + "js"))
    rows = [("core NATS, publisher to one subscriber (baseline)", base),
            ("JetStream publish, file storage, each acknowledged", stored),
            ("JetStream pull consumer, each acknowledged", consumed)]
    print(table([(name, f"{rate:,.0f}", f"{rate * readings:,.0f}", f"{rate / base:.2f}")
                 for name, rate in rows],
                ("path", "messages/s", "readings/s", "ratio to core NATS")))
    size = sum(len(p) for _, p in messages) / len(messages)
    print(f"{len(messages):,} messages of {readings:.0f} readings ({size:,.0f} bytes "
          "each on average), MessagePack")


if __name__ == "__main__":
    main()
