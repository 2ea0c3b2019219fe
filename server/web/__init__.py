"""What both FastAPI apps (the API, ``server/api``, and the ingest service,
``server/ingest``) share: the dependencies routes declare (a pooled connection, the
authenticated principal), JSON error handling, the database pool and probe, ``/metrics``.

It depends on ``server.security`` (who is asking) and on nothing of either app, so the API
and ingest never import each other for these.
"""
