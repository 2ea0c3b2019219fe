"""The HTTP API for operators and scenario labs, under /api/v1 (FastAPI).

    app.py          create_app(): routers, error style, the connection pool, /healthz
    models.py       response models (the OpenAPI schema)
    time_params.py  time ranges and buckets from query strings, with 4xx errors
    routes/         one router per resource
    sta/            the SensorThings subset under /sta/v1.1

Dependencies routes declare (a connection, the caller's key) are in ``server.web.deps``;
API keys themselves in ``server.security.api_keys``.
"""
