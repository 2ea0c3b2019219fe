"""The site registry: its data is complete and geographically sane, the loader refuses bad
rows with errors that point at them, and the generator reproduces the packaged files."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from pathlib import Path

import pytest

from tidefield.protocol.catalog import DEVICE_TEMPLATES, SITE_KINDS
from tidefield.protocol.registry import (
    CSV_COLUMNS,
    DISTRICTS,
    RegistryError,
    district_at,
    district_polygons,
    generate,
    in_qingdao_waters,
    load_geojson,
    load_sites,
    point_in_polygon,
)
from tidefield.protocol.topics import ID_PATTERN

PACKAGE_DIR = Path(generate.__file__).parent
SITES = load_sites()
FARMS = [site for site in SITES if site.domain == "agriculture"]
OCEAN = [site for site in SITES if site.domain == "ocean"]


def _segments(lines):
    return [pair for line in lines for pair in itertools.pairwise(map(tuple, line))]


def _coast_segments():
    (coastline,) = [f for f in load_geojson()["features"]
                    if f["properties"]["layer"] == "coastline"]
    return _segments(coastline["geometry"]["coordinates"])


# --- the data -------------------------------------------------------------------------

def test_170_farms_and_80_ocean_sites_numbered_without_gaps():
    assert [site.id for site in FARMS] == [f"ag-{n:03d}" for n in range(1, 171)]
    assert [site.id for site in OCEAN] == [f"oc-{n:03d}" for n in range(1, 81)]


def test_ids_and_names_are_unique():
    for field in ("id", "name_zh", "name_en"):
        values = Counter(getattr(site, field) for site in SITES)
        assert [v for v, n in values.items() if n > 1] == [], field


def test_every_kind_is_used_in_its_own_domain():
    assert {site.kind for site in SITES} == set(SITE_KINDS)
    for site in SITES:
        assert site.domain == SITE_KINDS[site.kind].domain


def test_every_site_is_in_the_qingdao_area():
    for site in SITES:
        assert 119.5 <= site.lon <= 121.2 and 35.3 <= site.lat <= 37.2, site


def test_every_farm_lies_on_its_own_districts_land():
    for site in FARMS:
        assert district_at(site.lon, site.lat) == site.district, site


def test_farms_keep_a_kilometre_from_their_district_border():
    rings = district_polygons()
    for site in FARMS:
        edges = _segments(rings[site.district])
        assert generate.km_to_nearest((site.lon, site.lat), edges) >= 1.0, site


def test_farms_are_mostly_in_the_countryside():
    per_district = Counter(site.district for site in FARMS)
    urban = per_district["shinan"] + per_district["shibei"] + per_district["licang"]
    rural = sum(per_district[d] for d in ("pingdu", "laixi", "jimo", "jiaozhou", "huangdao"))
    assert urban <= 3 and rural >= 120


def test_tea_grows_mostly_in_laoshan_and_huangdao():
    tea = Counter(site.district for site in FARMS if site.kind == "tea_garden")
    assert tea["laoshan"] + tea["huangdao"] >= 0.75 * sum(tea.values())


def test_every_ocean_site_is_at_sea_off_qingdao():
    for site in OCEAN:
        assert district_at(site.lon, site.lat) is None, site
        assert in_qingdao_waters(site.lon, site.lat), site


def test_ocean_sites_keep_500_m_off_the_coast():
    coast = _coast_segments()
    for site in OCEAN:
        assert generate.km_to_nearest((site.lon, site.lat), coast) >= 0.5, site


def test_an_ocean_site_belongs_to_the_nearest_district():
    edges = {district: _segments(rings) for district, rings in district_polygons().items()}
    for site in OCEAN:
        nearest = min(edges, key=lambda d: generate.km_to_nearest((site.lon, site.lat), edges[d]))
        assert site.district == nearest, site


def test_devices_follow_the_templates_of_their_kind():
    id_pattern = re.compile(rf"^{ID_PATTERN}$")
    all_ids = []
    for site in SITES:
        templates = DEVICE_TEMPLATES[site.kind]
        assert [device.template for device in site.devices] == list(templates)
        for device in site.devices:
            assert device.site_id == site.id
            assert device.id == f"{site.id}-{device.template.name}"
            assert id_pattern.match(device.id)
            all_ids.append(device.id)
    assert len(all_ids) == len(set(all_ids))


def test_loading_twice_is_cached():
    assert load_sites() is load_sites()


# --- the map --------------------------------------------------------------------------

@pytest.mark.parametrize(("lon", "lat", "district"), [
    (119.96, 36.78, "pingdu"),  # Pingdu city centre
    (120.52, 36.89, "laixi"),  # Laixi city centre
    (120.03, 36.28, "jiaozhou"),  # Jiaozhou city centre
    (120.45, 36.39, "jimo"),  # Jimo city centre
    (120.20, 35.97, "huangdao"),  # Xuejiadao / West Coast New Area
    (120.63, 36.28, "laoshan"),  # Wanggezhuang
    (120.38, 36.07, "shinan"),  # May Fourth Square
    (120.25, 36.15, None),  # the middle of Jiaozhou Bay
    (120.60, 35.90, None),  # the Yellow Sea
])
def test_well_known_places_land_where_they_should(lon, lat, district):
    assert district_at(lon, lat) == district
    assert in_qingdao_waters(lon, lat) == (district is None)


def test_the_map_has_the_ten_districts_a_coastline_and_the_sea():
    features = load_geojson()["features"]
    layers = Counter(f["properties"]["layer"] for f in features)
    assert layers == {"district": 10, "coastline": 1, "sea": 1}
    for feature in features:
        properties = feature["properties"]
        if properties["layer"] == "district":
            assert DISTRICTS[properties["id"]] == (properties["name_zh"], properties["name_en"])
        if properties["layer"] == "sea":
            assert properties["id"] == "qingdao_waters"
    assert (PACKAGE_DIR / "qingdao.geojson").stat().st_size < 200_000


def test_districts_tile_the_land_and_the_sea_stays_off_it():
    # On a grid over the whole city: no point in two districts, none both land and sea.
    rings = district_polygons()
    for lon, lat in itertools.product(_steps(119.5, 121.2, 70), _steps(35.3, 37.2, 70)):
        owners = [d for d, parts in rings.items()
                  if any(point_in_polygon(lon, lat, ring) for ring in parts)]
        assert len(owners) <= 1, (lon, lat, owners)
        assert not (owners and in_qingdao_waters(lon, lat)), (lon, lat, owners)


def _steps(start: float, stop: float, count: int) -> list[float]:
    return [start + (stop - start) * (i + 0.5) / count for i in range(count)]


def test_point_in_polygon_on_a_square():
    square = [(0.0, 0.0), (2.0, 0.0), (2.0, 2.0), (0.0, 2.0)]
    assert point_in_polygon(1.0, 1.0, square)
    assert point_in_polygon(1.0, 1.0, [*square, square[0]])  # closed rings work too
    assert not point_in_polygon(3.0, 1.0, square)
    assert not point_in_polygon(1.0, -0.5, square)


# --- the generator --------------------------------------------------------------------

def test_the_generator_reproduces_the_packaged_files_byte_for_byte(tmp_path):
    runs = []
    for run in ("first", "second"):
        sites, geojson = tmp_path / f"{run}.csv", tmp_path / f"{run}.geojson"
        assert generate.main(["--sites", str(sites), "--geojson", str(geojson)]) == 0
        runs.append((sites.read_bytes(), geojson.read_bytes()))
    assert runs[0] == runs[1]
    assert runs[0] == ((PACKAGE_DIR / "sites.csv").read_bytes(),
                       (PACKAGE_DIR / "qingdao.geojson").read_bytes())


def test_the_generated_csv_is_utf8_with_plain_newlines():
    raw = (PACKAGE_DIR / "sites.csv").read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")
    assert raw.decode("utf-8").splitlines()[0] == ",".join(CSV_COLUMNS)


# --- the loader refuses bad rows ------------------------------------------------------

GOOD_ROW = ('ag-001,平度市大泽山镇葡萄园,"Dazeshan Vineyard, Pingdu",orchard,agriculture,pingdu,'
            "36.96,120.03")


def _load(tmp_path: Path, *rows: str):
    path = tmp_path / "sites.csv"
    path.write_text("\n".join([",".join(CSV_COLUMNS), GOOD_ROW, *rows]) + "\n",
                    encoding="utf-8")
    return load_sites(path)


def _refused(tmp_path: Path, bad_row: str) -> RegistryError:
    with pytest.raises(RegistryError) as caught:
        _load(tmp_path, bad_row)
    return caught.value


def test_a_good_file_loads(tmp_path):
    (site,) = _load(tmp_path)
    assert (site.id, site.kind, site.district, site.lat, site.lon) == (
        "ag-001", "orchard", "pingdu", 36.96, 120.03)


def test_an_unknown_kind_is_refused(tmp_path):
    error = _refused(tmp_path, "ag-002,某地,Somewhere,rice_paddy,agriculture,jimo,36.4,120.4")
    assert (error.row, error.field) == (2, "kind")
    assert "row 2" in str(error) and "'kind'" in str(error) and "rice_paddy" in str(error)


def test_a_kind_in_the_wrong_domain_is_refused(tmp_path):
    error = _refused(tmp_path, "oc-001,某地,Somewhere,cage_farm,agriculture,huangdao,35.7,120.2")
    assert (error.row, error.field) == (2, "domain")
    assert "row 2" in str(error) and "'domain'" in str(error) and "cage_farm" in str(error)


def test_a_duplicate_id_is_refused(tmp_path):
    error = _refused(tmp_path, "ag-001,某地,Somewhere,greenhouse,agriculture,jimo,36.4,120.4")
    assert (error.row, error.field) == (2, "id")
    assert "row 2" in str(error) and "duplicate" in str(error) and "row 1" in str(error)


@pytest.mark.parametrize("latitude", ["91.5", "not-a-number", "nan", "120.4"])
def test_a_bad_latitude_is_refused(tmp_path, latitude):
    error = _refused(tmp_path,
                     f"ag-002,某地,Somewhere,greenhouse,agriculture,jimo,{latitude},120.4")
    assert (error.row, error.field) == (2, "lat")
    assert "row 2" in str(error) and "'lat'" in str(error)


@pytest.mark.parametrize("site_id", ["AG-002", "-ag", "ag_002", "a" * 64, ""])
def test_an_id_outside_the_topic_grammar_is_refused(tmp_path, site_id):
    error = _refused(tmp_path, f"{site_id},某地,Somewhere,greenhouse,agriculture,jimo,36.4,120.4")
    assert (error.row, error.field) == (2, "id")


def test_a_wrong_header_is_refused(tmp_path):
    path = tmp_path / "sites.csv"
    path.write_text("id,name,kind\nag-001,x,orchard\n", encoding="utf-8")
    with pytest.raises(RegistryError, match="header"):
        load_sites(path)
