"""The HTTP API for operators and scenario labs, under /api/v1 (FastAPI).

    app.py        create_app(): routers, error handlers, the connection pool
    deps.py       Annotated dependencies: a connection, the caller's API key
    keys.py       API keys: create, revoke, authenticate
    models.py     response models (the OpenAPI schema)
    routes/       one router per resource
"""
