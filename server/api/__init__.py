"""The HTTP API for operators and scenario labs, under /api/v1 (FastAPI).

    app.py          create_app(): routers, error style, the connection pool, /healthz
    models.py       response models (the OpenAPI schema)
    query_params.py query-string parameters routes share (time ranges, site, page size)
    routes/         one router per resource
    sta/            the SensorThings subset under /sta/v1.1

Dependencies routes declare (a connection, the caller's key) are in ``server.web.deps``;
API keys themselves in ``server.security.api_keys``.
"""
