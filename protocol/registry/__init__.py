"""Tidefield's site registry: every site we monitor, and a coarse map of Qingdao.

Two data files ship inside this package (both written by ``generate.py``, never by hand):

* ``sites.csv``: one row per site, columns ``id,name_zh,name_en,kind,domain,district,lat,lon``
  (170 agricultural bases ``ag-001``..``ag-170`` and 80 ocean sites ``oc-001``..``oc-080``).
* ``qingdao.geojson``: WGS84 lon/lat features, told apart by ``properties.layer``:
  ``district`` (land polygons of the 10 county-level districts), ``coastline`` and
  ``sea`` (``qingdao_waters``: Jiaozhou Bay plus the Yellow Sea some 30-40 km out).

The map is simplified to a few hundred metres: good for "which district is this point in"
and for drawing, not for surveying. Points within ~500 m of a border or the coast may
land on the wrong side.

Pure stdlib on purpose: edge devices import this without numpy.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from ..catalog import DEVICE_TEMPLATES, SITE_KINDS, DeviceTemplate, Domain
from ..topics import ID_PATTERN

SITES_FILE = "sites.csv"
GEOJSON_FILE = "qingdao.geojson"
CSV_COLUMNS = ("id", "name_zh", "name_en", "kind", "domain", "district", "lat", "lon")

# Site ids become MQTT topic levels, so they follow the topic grammar exactly.
_ID_RE = re.compile(ID_PATTERN)

# A coordinate outside this box is a typo (swapped lat/lon, a lost digit), not a site:
# Qingdao's land and waters lie within about lon 119.5-121.2, lat 35.3-37.2.
LON_RANGE = (119.0, 121.5)
LAT_RANGE = (35.0, 37.5)

DISTRICTS: MappingProxyType[str, tuple[str, str]] = MappingProxyType({
    "shinan": ("市南区", "Shinan"),
    "shibei": ("市北区", "Shibei"),
    "licang": ("李沧区", "Licang"),
    "laoshan": ("崂山区", "Laoshan"),
    "chengyang": ("城阳区", "Chengyang"),
    "huangdao": ("黄岛区", "Huangdao"),  # also 西海岸新区, the West Coast New Area
    "jimo": ("即墨区", "Jimo"),
    "jiaozhou": ("胶州市", "Jiaozhou"),
    "pingdu": ("平度市", "Pingdu"),
    "laixi": ("莱西市", "Laixi"),
})

Point = tuple[float, float]  # (lon, lat), the GeoJSON order
Ring = list[Point]


class RegistryError(ValueError):
    """A registry file is malformed. ``row`` is the 1-based data row (the header is row 0)
    and ``field`` the column at fault, when the problem has one."""

    def __init__(self, message: str, *, row: int | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.row = row
        self.field = field


@dataclass(frozen=True, slots=True)
class Device:
    site_id: str
    id: str  # "{site_id}-{template.name}", also the device level of its MQTT topics
    template: DeviceTemplate


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    name_zh: str
    name_en: str
    kind: str  # a key of catalog.SITE_KINDS
    domain: str  # "agriculture" or "ocean", always the domain of ``kind``
    district: str  # a key of DISTRICTS; for ocean sites the district whose coast is nearest
    lat: float
    lon: float

    @property
    def devices(self) -> tuple[Device, ...]:
        """The field devices a site of this kind carries, one per catalog template."""
        return tuple(Device(self.id, f"{self.id}-{template.name}", template)
                     for template in DEVICE_TEMPLATES[self.kind])


# --- sites.csv ------------------------------------------------------------------------

def load_sites(path: Path | str | None = None) -> tuple[Site, ...]:
    """Every site in ``path`` (default: the packaged sites.csv), validated.

    Cached: repeated calls return the same tuple until the file changes on disk.
    Raises RegistryError naming the row and field of the first bad value.
    """
    if path is None:
        return _packaged_sites()
    path = Path(path)
    stat = path.stat()
    return _sites_from_file(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=1)
def _packaged_sites() -> tuple[Site, ...]:
    return parse_sites(_packaged_text(SITES_FILE), source=SITES_FILE)


@lru_cache(maxsize=8)
def _sites_from_file(path: str, _mtime_ns: int, _size: int) -> tuple[Site, ...]:
    # mtime and size are only part of the cache key, so an edited file is read again.
    return parse_sites(Path(path).read_text(encoding="utf-8-sig"), source=path)


def parse_sites(text: str, *, source: str = SITES_FILE) -> tuple[Site, ...]:
    """Parse and validate the text of a sites.csv; ``source`` names it in errors."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = tuple(reader.fieldnames or ())
    if header != CSV_COLUMNS:
        raise RegistryError(f"{source}: header must be {','.join(CSV_COLUMNS)}, "
                            f"got {','.join(header) or 'nothing'}", row=0)
    sites: list[Site] = []
    first_row_of_id: dict[str, int] = {}
    for row_number, raw in enumerate(reader, start=1):
        where = _Where(source, row_number, reader.line_num)
        site = _parse_row(raw, where)
        if site.id in first_row_of_id:
            raise where.error("id", f"duplicate id {site.id!r} "
                                    f"(first used in row {first_row_of_id[site.id]})")
        first_row_of_id[site.id] = row_number
        sites.append(site)
    return tuple(sites)


def site_from_fields(fields: dict[str, str], *, source: str = "site") -> Site:
    """One site from its CSV columns (as text), checked as a row of sites.csv is: what the
    API and the dashboards' admin page create or edit is what a registry file may hold.
    Raises RegistryError naming the field at fault."""
    missing = [column for column in CSV_COLUMNS if column not in fields]
    if missing:
        raise RegistryError(f"{source}: missing {', '.join(missing)}", field=missing[0])
    raw: dict[str | None, Any] = {column: str(fields[column]) for column in CSV_COLUMNS}
    return _parse_row(raw, _Where(source, 1, 1))


def sites_csv(sites: Sequence[Site]) -> str:
    """The text of a sites.csv holding ``sites`` (what ``parse_sites`` reads back)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for site in sites:
        writer.writerow((site.id, site.name_zh, site.name_en, site.kind, site.domain,
                         site.district, f"{site.lat:.5f}", f"{site.lon:.5f}"))
    return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class _Where:
    """Where a value came from, so every error points at the row and field to fix."""

    source: str
    row: int
    line: int

    def error(self, field: str | None, problem: str) -> RegistryError:
        column = f", field {field!r}" if field else ""
        return RegistryError(f"{self.source} row {self.row} (line {self.line}){column}: "
                             f"{problem}", row=self.row, field=field)


def _parse_row(raw: dict[str | None, Any], where: _Where) -> Site:
    expected = len(CSV_COLUMNS)
    if None in raw:  # DictReader files surplus cells (a list) under the key None...
        raise where.error(None, f"expected {expected} fields, got {expected + len(raw[None])}")
    if None in raw.values():  # ...and fills missing ones with None
        present = sum(value is not None for value in raw.values())
        raise where.error(None, f"expected {expected} fields, got {present}")
    row: dict[str, str] = {str(key): value.strip() for key, value in raw.items()}

    site_id = row["id"]
    if not _ID_RE.fullmatch(site_id):
        raise where.error("id", f"{site_id!r} is not a valid id "
                                "(lowercase letters, digits and '-', 1-63 characters)")
    for field in ("name_zh", "name_en"):
        if not row[field]:
            raise where.error(field, "must not be empty")

    kind = row["kind"]
    if kind not in SITE_KINDS:
        raise where.error("kind", f"unknown site kind {kind!r} "
                                  f"(expected one of {', '.join(SITE_KINDS)})")
    domain = row["domain"]
    expected_domain = SITE_KINDS[kind].domain
    if domain not in {d.value for d in Domain}:
        raise where.error("domain", f"unknown domain {domain!r}")
    if domain != expected_domain:
        raise where.error("domain", f"domain {domain!r} does not match kind {kind!r}, "
                                    f"which is {expected_domain.value!r}")
    district = row["district"]
    if district not in DISTRICTS:
        raise where.error("district", f"unknown district {district!r} "
                                      f"(expected one of {', '.join(DISTRICTS)})")

    lat = _coordinate(row["lat"], "lat", LAT_RANGE, where)
    lon = _coordinate(row["lon"], "lon", LON_RANGE, where)
    return Site(site_id, row["name_zh"], row["name_en"], kind, domain, district, lat, lon)


def _coordinate(text: str, field: str, bounds: tuple[float, float], where: _Where) -> float:
    try:
        value = float(text)
    except ValueError:
        raise where.error(field, f"not a number: {text!r}") from None
    low, high = bounds
    if not (math.isfinite(value) and low <= value <= high):
        raise where.error(field, f"{text} is outside {low}..{high}, the Qingdao area")
    return value


# --- qingdao.geojson ------------------------------------------------------------------

def load_geojson() -> dict[str, Any]:
    """The packaged map as a fresh dict (callers may modify it; the cache keeps the text)."""
    return cast(dict[str, Any], json.loads(_packaged_text(GEOJSON_FILE)))


def district_polygons() -> dict[str, list[Ring]]:
    """Outer ring of every land part of every district (Huangdao and Jimo include an island).

    Districts have no holes, so these rings are the whole story for drawing them.
    """
    return {district: [list(area.rings[0]) for area in areas]
            for district, areas in _district_areas().items()}


def point_in_polygon(lon: float, lat: float, ring: Sequence[Point]) -> bool:
    """Whether (lon, lat) lies inside ``ring`` (closed or not), by even-odd ray casting.

    Points exactly on an edge may fall either way; the map is far coarser than that.
    """
    inside = False
    previous_lon, previous_lat = ring[-1]
    for vertex_lon, vertex_lat in ring:
        if (vertex_lat > lat) != (previous_lat > lat):
            crossing_lon = vertex_lon + (previous_lon - vertex_lon) * (
                (lat - vertex_lat) / (previous_lat - vertex_lat))
            if lon < crossing_lon:
                inside = not inside
        previous_lon, previous_lat = vertex_lon, vertex_lat
    return inside


def district_at(lon: float, lat: float) -> str | None:
    """The district whose land contains (lon, lat), or None at sea or outside Qingdao."""
    for district, areas in _district_areas().items():
        if any(area.contains(lon, lat) for area in areas):
            return district
    return None


def in_qingdao_waters(lon: float, lat: float) -> bool:
    """Whether (lon, lat) is in the sea area off Qingdao (Jiaozhou Bay included)."""
    return any(area.contains(lon, lat) for area in _sea_areas())


@dataclass(frozen=True, slots=True)
class _Area:
    """One polygon: the outer ring, then its holes (islands cut out of the sea)."""

    rings: tuple[tuple[Point, ...], ...]
    bbox: tuple[float, float, float, float]  # west, south, east, north: a cheap first test

    @classmethod
    def from_coordinates(cls, rings: list[list[list[float]]]) -> _Area:
        points = tuple(tuple((lon, lat) for lon, lat in ring) for ring in rings)
        lons = [lon for lon, _ in points[0]]
        lats = [lat for _, lat in points[0]]
        return cls(points, (min(lons), min(lats), max(lons), max(lats)))

    def contains(self, lon: float, lat: float) -> bool:
        west, south, east, north = self.bbox
        if not (west <= lon <= east and south <= lat <= north):
            return False
        outer, *holes = self.rings
        return point_in_polygon(lon, lat, outer) and not any(
            point_in_polygon(lon, lat, hole) for hole in holes)


@lru_cache(maxsize=1)
def _district_areas() -> dict[str, tuple[_Area, ...]]:
    return {feature["properties"]["id"]: _areas(feature["geometry"])
            for feature in _features("district")}


@lru_cache(maxsize=1)
def _sea_areas() -> tuple[_Area, ...]:
    return tuple(area for feature in _features("sea") for area in _areas(feature["geometry"]))


def _features(layer: str) -> list[dict[str, Any]]:
    # Parsed once per cached consumer above, so nobody shares a dict they could modify.
    return [feature for feature in load_geojson()["features"]
            if feature["properties"]["layer"] == layer]


def _areas(geometry: dict[str, Any]) -> tuple[_Area, ...]:
    if geometry["type"] == "Polygon":
        polygons = [geometry["coordinates"]]
    elif geometry["type"] == "MultiPolygon":
        polygons = geometry["coordinates"]
    else:
        raise RegistryError(f"{GEOJSON_FILE}: expected a (Multi)Polygon, "
                            f"got {geometry['type']}")
    return tuple(_Area.from_coordinates(polygon) for polygon in polygons)


@lru_cache(maxsize=4)
def _packaged_text(name: str) -> str:
    # importlib.resources, not a path next to __file__: works from wheels and zips too.
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


__all__ = [
    "CSV_COLUMNS", "DISTRICTS", "Device", "RegistryError", "Site", "district_at",
    "district_polygons", "in_qingdao_waters", "load_geojson", "load_sites", "parse_sites",
    "point_in_polygon", "site_from_fields", "sites_csv",
]
