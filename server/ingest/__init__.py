"""Ingest: MQTT and HTTP telemetry into TimescaleDB, each reading stored exactly once.

    pipeline.prepare()   decode and validate messages (tidefield.protocol), resolve series
    store.Store.write()  one transaction: batches, readings, rollups, status, rejects
    worker.Worker        the loop that batches messages, writes them, then acknowledges
    consumer             the MQTT side (the only module here that talks to the broker)
    app                  the FastAPI app of an ingest process: /healthz, /metrics, HTTP ingest
"""
