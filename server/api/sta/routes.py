"""The /sta/v1.1 routes: the service root, and for each entity set its collection, one
entity by id, and its navigation properties. Routes are made from the registry in
entities.py, so each set is documented in the OpenAPI schema with its own models.

Keys are checked as on /api/v1 (the same ``Reader`` dependency: 401 without a key, 403
without the read scope); a key's site limit is applied inside every query.
"""

# No `from __future__ import annotations` here: the routes are made in a loop, and
# FastAPI must see each route's own Literal of navigation names, evaluated at definition.
import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from tidefield.server.security.api_keys import Principal
from tidefield.server.web.deps import ReadConnDep, Reader

from .entities import ENTITY_SETS, EntitySet
from .errors import StaError, error_response
from .models import ENTITY_MODELS, ERRORS, PAGE_MODELS, ServiceRoot
from .options import OPTIONS, Options, parse_options
from .query import (
    Context,
    collection,
    fetch_by_key,
    fetch_page,
    format_key,
    parse_key,
    render,
)

log = logging.getLogger(__name__)

PREFIX = "/sta/v1.1"
DEFAULT_STATEMENT_TIMEOUT_S = 15.0
CONFORMANCE = [
    "http://www.opengis.net/spec/iot_sensing/1.1/req/core",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
]

router = APIRouter(prefix=PREFIX, tags=["SensorThings"], responses=ERRORS)


def _given(request: Request) -> dict[str, str]:
    given = {}
    for name in request.query_params:
        values = request.query_params.getlist(name)
        if name.startswith("$") and len(values) > 1:
            raise StaError(f"{name} is given more than once")
        given[name] = values[-1]
    return given


def _root(request: Request) -> str:
    return str(request.base_url).rstrip("/") + PREFIX


def _run(request: Request, conn: psycopg.Connection, principal: Principal,
         answer: Callable[[Context], dict]) -> JSONResponse:
    """Answer inside one read-only transaction bounded by the statement timeout."""
    ctx = Context(conn, principal.site_list,
                  _root(request))
    timeout_s = getattr(request.app.state, "sta_statement_timeout_s",
                        DEFAULT_STATEMENT_TIMEOUT_S)
    try:
        with conn.transaction():
            # JIT compiles for the planner's estimate of a LATERAL over every series,
            # ~50 ms that a LIMITed page never earns back
            conn.execute("SELECT set_config('statement_timeout', %s, true), "
                         "set_config('transaction_read_only', 'on', true), "
                         "set_config('jit', 'off', true)",
                         (f"{int(timeout_s * 1000)}ms",))
            body = answer(ctx)
    except psycopg.errors.QueryCanceled as exc:
        raise StaError(f"the query ran longer than {timeout_s:g} s; narrow it (a time range "
                       f"in $filter, a Datastream) and page with @iot.nextLink") from exc
    except psycopg.DataError as exc:
        # a value the database cannot take or compute (an overflowing product in $filter)
        raise StaError(f"invalid value in the query: {str(exc).splitlines()[0]}") from exc
    return JSONResponse(body)


# ---------------------------------------------------------------------------- documentation
# The options are read from the raw query string (so unknown $options can be refused);
# these declarations only document them.

_Filter = Annotated[str | None, Query(
    alias="$filter", description="e.g. `phenomenonTime ge 2026-11-20T00:00:00Z and "
    "result gt 5`: eq ne gt ge lt le, and or not, ( ), add sub mul div mod, functions")]
_Top = Annotated[str | None, Query(alias="$top", description="page size (at most 1000)")]
_Skip = Annotated[str | None, Query(alias="$skip",
                                    description="entities to skip (at most 10,000)")]
_OrderBy = Annotated[str | None, Query(alias="$orderby",
                                       description="e.g. `phenomenonTime desc`")]
_Select = Annotated[str | None, Query(alias="$select", description="e.g. `id,name`")]
_Expand = Annotated[str | None, Query(
    alias="$expand", description="e.g. `Datastreams($top=5;$expand=Observations($top=1;"
    "$orderby=phenomenonTime desc))`")]
_Count = Annotated[str | None, Query(alias="$count", description="true: add @iot.count")]
_SkipToken = Annotated[str | None, Query(alias="$skiptoken",
                                         description="set by @iot.nextLink")]


# ---------------------------------------------------------------------------- routes

@router.get("", response_model=ServiceRoot, summary="SensorThings service root")
# clients are often configured with the root's URL ending in a slash: the same document
# (left out of the schema, where it would be the same operation twice)
@router.get("/", response_model=ServiceRoot, include_in_schema=False)
def service_root(request: Request, principal: Reader) -> dict:
    root = _root(request)
    return {"value": [{"name": name, "url": f"{root}/{name}"} for name in ENTITY_SETS],
            "serverSettings": {"conformance": CONFORMANCE}}


def _add_routes(entity_set: EntitySet) -> None:
    name = entity_set.name

    def list_entities(request: Request, conn: ReadConnDep, principal: Reader,
                      filter_: _Filter = None, top: _Top = None, skip: _Skip = None,
                      orderby: _OrderBy = None, select: _Select = None,
                      expand: _Expand = None, count: _Count = None,
                      skiptoken: _SkipToken = None) -> JSONResponse:
        options = parse_options(entity_set, _given(request))
        return _run(request, conn, principal, lambda ctx: collection(
            ctx, entity_set, options, f"{ctx.root}/{name}"))

    def get_entity(id: str, request: Request, conn: ReadConnDep, principal: Reader,
                   select: _Select = None, expand: _Expand = None) -> JSONResponse:
        key = parse_key(entity_set, id)
        options = _single_options(entity_set, request)

        def answer(ctx: Context) -> dict:
            return render(ctx, entity_set, [fetch_by_key(ctx, entity_set, key)], options)[0]
        return _run(request, conn, principal, answer)

    router.add_api_route(f"/{name}", list_entities, methods=["GET"],
                         response_model=PAGE_MODELS[name], operation_id=f"list_{name}",
                         summary=f"List {name}")
    router.add_api_route(f"/{name}({{id}})", get_entity, methods=["GET"],
                         response_model=ENTITY_MODELS[name], operation_id=f"get_{name}",
                         summary=f"One of the {name} by id")
    if not entity_set.navigations:
        return
    navigations = tuple(entity_set.navigations)

    def navigate(id: str, navigation: Literal[navigations],  # type: ignore[valid-type]
                 request: Request, conn: ReadConnDep, principal: Reader,
                 filter_: _Filter = None, top: _Top = None, skip: _Skip = None,
                 orderby: _OrderBy = None, select: _Select = None, expand: _Expand = None,
                 count: _Count = None, skiptoken: _SkipToken = None) -> JSONResponse:
        key = parse_key(entity_set, id)
        link = entity_set.navigations[navigation]
        target = ENTITY_SETS[link.target]
        options = (parse_options(target, _given(request)) if link.many
                   else _single_options(target, request))

        def answer(ctx: Context) -> dict:
            parent = fetch_by_key(ctx, entity_set, key)
            value = parent[link.source_column]
            if link.many:
                url = f"{ctx.root}/{name}({format_key(entity_set, key)})/{navigation}"
                return collection(ctx, target, options, url, (link.target_column, value))
            options.top = 1
            page = fetch_page(ctx, target, options, (link.target_column, value))
            if not page.rows:
                raise StaError(f"{name}({id}) has no {navigation}", 404)
            return render(ctx, target, page.rows, options)[0]
        return _run(request, conn, principal, answer)

    targets = [ENTITY_SETS[n.target] for n in entity_set.navigations.values()]
    models = tuple(PAGE_MODELS[t.name] if n.many else ENTITY_MODELS[t.name]
                   for t, n in zip(targets, entity_set.navigations.values(), strict=True))
    router.add_api_route(f"/{name}({{id}})/{{navigation}}", navigate, methods=["GET"],
                         response_model=models[0] if len(models) == 1 else
                         _union(models), operation_id=f"navigate_{name}",
                         summary=f"Entities related to one of the {name}")


def _union(models: tuple[type[BaseModel], ...]) -> Any:
    from typing import Union

    return Union[models]  # noqa: UP007 (a runtime tuple of models)


def _single_options(entity_set: EntitySet, request: Request) -> Options:
    """$select and $expand; the collection options mean nothing for one entity."""
    given = _given(request)
    parse_options(entity_set, {k: v for k, v in given.items() if k not in OPTIONS})
    return parse_options(entity_set, {k: v for k, v in given.items()
                                      if k in ("$select", "$expand")})


for _entity_set in ENTITY_SETS.values():
    _add_routes(_entity_set)


def install(app: FastAPI) -> None:
    """Mount the routes and make their errors SensorThings-shaped."""
    app.include_router(router)

    @app.exception_handler(StaError)
    async def sta_error(request: Request, exc: StaError) -> JSONResponse:
        return error_response(exc.status, exc.message)
