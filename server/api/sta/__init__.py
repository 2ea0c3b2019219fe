"""A read-only OGC SensorThings API 1.1 subset at /sta/v1.1, over the same tables as /api/v1.

    entities.py   the mapping: which table is which entity set, and what each may filter
    filter.py     the $filter language: parser and compiler to parameterised SQL
    options.py    $top, $skip, $orderby, $select, $expand, $count, $skiptoken
    query.py      the SQL (keyset paging, LATERAL per series) and the JSON shapes
    routes.py     the FastAPI routes, made from the registry; install(app)
    models.py     the OpenAPI models
    errors.py     StaError and its FROST-style body
"""

from .errors import StaError, error_response
from .routes import PREFIX, install

__all__ = ["PREFIX", "StaError", "error_response", "install"]
