"""Write the registry's data files: qingdao.geojson (the map) and sites.csv (the sites).

    python -m tidefield.protocol.registry.generate            # rewrite both packaged files
    python -m tidefield.protocol.registry.generate --check    # exit 1 if they are stale

Everything here is data plus a little stdlib geometry, and the output is byte-identical on
every run: the only randomness is ``random.Random(SEED)``, consumed in a fixed order.

The map
    The vertices below are the only copy of the geometry. District borders and the coast
    are stored once each as *arcs* (polylines between the points where three areas meet)
    and every polygon is stitched from arcs, so neighbouring districts share their border
    exactly: no gaps, no overlaps, and the sea fits the coast.

    The arcs were simplified from public county-level boundary data (converted from GCJ-02
    to WGS84, Douglas-Peucker to 0.2-1.5 km, coordinates rounded to 4 decimals, ~10 m).
    District areas come out within ~6% of the official figures. Small islands are left
    out; only Lingshan Island (Huangdao) and Tianheng Island (Jimo) are drawn.

The sites
    Farms are planned per town (real towns and streets of each district, with what they
    are known for, e.g. Dazeshan grapes, Laoshan tea, Licha black pigs) and ocean sites per
    named stretch of water. Each planned site is dropped at a seeded random spot near its
    anchor and kept only if it passes the placement rules (see "placement rules" below),
    so a misplaced anchor fails the run loudly instead of yielding a farm in the sea.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import itertools
import json
import math
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..catalog import SITE_KINDS
from . import CSV_COLUMNS, DISTRICTS, Point, Site, parse_sites, point_in_polygon

HERE = Path(__file__).resolve().parent
SEED = 170_080  # 170 farms, 80 ocean sites

# --- the map ----------------------------------------------------------------------------

# Arc names: "b_<a>_<b>" is the land border between districts a and b, "<d>_coast" the
# coast of district d, "o_<d>" its border with neighbouring cities (Weifang, Yantai,
# Rizhao), "i_<island>" a closed island ring, "sea_limit" the seaward edge of
# qingdao_waters (drawn by hand: ~30-40 km out, short of Rizhao's and Haiyang's waters).
# District abbreviations: sn Shinan, sb Shibei, lc Licang, ls Laoshan, cy Chengyang,
# jz Jiaozhou, hd Huangdao, jm Jimo, pd Pingdu, lx Laixi.
ARCS: dict[str, tuple[Point, ...]] = {
    "sn_coast": (
        (120.4215, 36.0561), (120.4102, 36.0571), (120.3922, 36.0506), (120.3827, 36.0514),
        (120.3841, 36.0591), (120.3801, 36.0593), (120.3651, 36.0532), (120.3628, 36.0420),
        (120.3529, 36.0487), (120.3350, 36.0420), (120.3378, 36.0515), (120.3325, 36.0548),
        (120.3195, 36.0509), (120.3193, 36.0597), (120.3101, 36.0592), (120.3076, 36.0515),
        (120.2900, 36.0506), (120.2918, 36.0429), (120.2863, 36.0458), (120.2836, 36.0428),
        (120.2856, 36.0613), (120.3000, 36.0782),
    ),
    "b_sn_sb": (
        (120.3000, 36.0782), (120.3137, 36.0739), (120.3136, 36.0700), (120.3279, 36.0737),
        (120.3591, 36.0681), (120.3689, 36.0868), (120.4145, 36.0907),
    ),
    "b_sn_ls": (
        (120.4145, 36.0907), (120.4171, 36.0775), (120.4084, 36.0744), (120.4215, 36.0561),
    ),
    "sb_coast": (
        (120.3000, 36.0782), (120.3060, 36.0798), (120.3017, 36.0898), (120.3148, 36.1033),
        (120.3125, 36.1079), (120.3211, 36.1115), (120.3286, 36.1344), (120.3466, 36.1607),
    ),
    "b_sb_ls": (
        (120.4145, 36.0907), (120.4151, 36.0945), (120.4292, 36.0973), (120.4059, 36.1278),
        (120.4149, 36.1341),
    ),
    "b_sb_lc": (
        (120.3466, 36.1607), (120.3659, 36.1522), (120.3890, 36.1547), (120.3955, 36.1517),
        (120.3993, 36.1394), (120.4149, 36.1341),
    ),
    "lc_coast": (
        (120.3466, 36.1607), (120.3531, 36.1745), (120.3644, 36.1775), (120.3636, 36.1828),
        (120.3536, 36.2001), (120.3383, 36.2081),
    ),
    "b_lc_ls": (
        (120.4149, 36.1341), (120.4249, 36.1438), (120.4482, 36.1434), (120.4784, 36.1581),
        (120.4985, 36.1792), (120.5064, 36.2086), (120.4795, 36.2156),
    ),
    "b_lc_cy": (
        (120.3383, 36.2081), (120.3441, 36.2240), (120.3603, 36.2236), (120.3636, 36.2336),
        (120.3802, 36.2381), (120.4208, 36.2184), (120.4206, 36.2037), (120.4382, 36.2078),
        (120.4489, 36.1995), (120.4600, 36.2008), (120.4795, 36.2156),
    ),
    "ls_coast": (
        (120.6514, 36.3221), (120.6631, 36.3040), (120.6502, 36.2798), (120.6551, 36.2748),
        (120.6815, 36.2790), (120.6855, 36.2531), (120.6773, 36.2376), (120.6920, 36.2039),
        (120.6924, 36.1685), (120.7041, 36.1636), (120.6931, 36.1543), (120.6996, 36.1523),
        (120.7007, 36.1396), (120.7134, 36.1409), (120.7150, 36.1343), (120.6909, 36.1237),
        (120.6680, 36.1298), (120.6385, 36.1148), (120.6110, 36.1202), (120.5952, 36.1019),
        (120.5746, 36.1040), (120.5727, 36.1152), (120.5624, 36.1060), (120.5471, 36.1116),
        (120.5434, 36.0924), (120.4930, 36.0861), (120.4749, 36.0915), (120.4278, 36.0626),
        (120.4267, 36.0516), (120.4215, 36.0561),
    ),
    "b_cy_ls": (
        (120.4795, 36.2156), (120.5041, 36.2530), (120.5681, 36.2683), (120.5619, 36.3283),
    ),
    "b_ls_jm": (
        (120.5619, 36.3283), (120.6144, 36.3217), (120.6208, 36.3415), (120.6320, 36.3211),
        (120.6514, 36.3221),
    ),
    "cy_coast": (
        (120.3383, 36.2081), (120.3149, 36.2320), (120.2883, 36.2191), (120.2933, 36.2036),
        (120.3082, 36.1962), (120.3052, 36.1851), (120.2580, 36.1821), (120.2559, 36.1983),
        (120.2398, 36.1992), (120.2236, 36.1878), (120.2122, 36.2113), (120.2021, 36.2115),
        (120.1764, 36.2037), (120.1351, 36.1730),
    ),
    "b_cy_jz": (
        (120.1351, 36.1730), (120.1130, 36.1901), (120.1294, 36.1998), (120.1117, 36.2036),
        (120.1023, 36.2532), (120.1154, 36.2535), (120.1149, 36.2742), (120.1688, 36.3003),
        (120.2109, 36.3584),
    ),
    "b_cy_jm": (
        (120.2109, 36.3584), (120.2193, 36.3992), (120.2471, 36.3896), (120.2445, 36.3678),
        (120.2912, 36.3349), (120.3360, 36.3416), (120.3546, 36.3101), (120.3942, 36.3331),
        (120.3907, 36.3644), (120.4142, 36.3426), (120.4582, 36.3457), (120.4731, 36.3244),
        (120.5138, 36.3387), (120.5398, 36.3239), (120.5422, 36.3402), (120.5619, 36.3283),
    ),
    "jz_coast": (
        (120.1351, 36.1730), (120.1372, 36.1433), (120.1228, 36.1295), (120.1032, 36.1271),
    ),
    "b_jz_jm": (
        (120.2109, 36.3584), (120.1484, 36.3876), (120.1600, 36.4334), (120.1317, 36.4534),
        (120.1653, 36.4715),
    ),
    "b_jz_hd": (
        (119.7116, 36.0418), (119.7756, 36.0111), (119.7829, 36.0314), (119.8086, 36.0268),
        (119.8161, 36.0500), (119.8463, 36.0591), (119.8701, 36.0446), (119.9648, 36.0733),
        (119.9701, 36.0642), (119.9738, 36.0897), (120.0068, 36.0924), (119.9946, 36.1105),
        (120.0070, 36.1443), (120.1032, 36.1271),
    ),
    "b_jz_pd": (
        (120.0028, 36.4980), (120.0565, 36.4759), (120.1249, 36.4921), (120.1653, 36.4715),
    ),
    "o_jz": (
        (119.7116, 36.0418), (119.6283, 36.0678), (119.6543, 36.1615), (119.6765, 36.1837),
        (119.7488, 36.1589), (119.8264, 36.1806), (119.8140, 36.2565), (119.8869, 36.3188),
        (119.9047, 36.3844), (119.9404, 36.3846), (119.9193, 36.4125), (119.9441, 36.4465),
        (120.0066, 36.4540), (120.0028, 36.4980),
    ),
    "hd_coast": (
        (120.1032, 36.1271), (120.1115, 36.1026), (120.1469, 36.0950), (120.1765, 36.0663),
        (120.2364, 36.0603), (120.2298, 36.0305), (120.1937, 35.9956), (120.2520, 36.0247),
        (120.2605, 36.0139), (120.2449, 35.9797), (120.2544, 35.9988), (120.2738, 35.9963),
        (120.2803, 36.0162), (120.3045, 36.0140), (120.3115, 36.0020), (120.3001, 35.9717),
        (120.2465, 35.9593), (120.2042, 35.9175), (120.1970, 35.8920), (120.1627, 35.8922),
        (120.1893, 35.9339), (120.2057, 35.9383), (120.2028, 35.9472), (120.1741, 35.9365),
        (120.1516, 35.9089), (120.1324, 35.9177), (120.1374, 35.9092), (120.1201, 35.9065),
        (120.1072, 35.8849), (120.0659, 35.8813), (120.0279, 35.8165), (120.0441, 35.7822),
        (120.0059, 35.7132), (119.9761, 35.7154), (119.9809, 35.7298), (119.9549, 35.7592),
        (119.9275, 35.7631), (119.9157, 35.7377), (119.9442, 35.7300), (119.9478, 35.7133),
        (119.9188, 35.6967), (119.9058, 35.6745), (119.9229, 35.6507), (119.9182, 35.6355),
        (119.8974, 35.6332), (119.8632, 35.6091), (119.8466, 35.6223), (119.8262, 35.6185),
        (119.8191, 35.6464), (119.7873, 35.6156), (119.7977, 35.6093), (119.7873, 35.5940),
        (119.7955, 35.5820), (119.7571, 35.5784),
    ),
    "o_hd": (
        (119.7571, 35.5784), (119.7460, 35.6179), (119.6768, 35.5902), (119.6137, 35.6071),
        (119.5328, 35.5895), (119.5123, 35.6259), (119.5170, 35.7317), (119.6194, 35.7130),
        (119.5866, 35.7534), (119.6070, 35.8126), (119.6816, 35.8618), (119.7315, 35.8630),
        (119.6757, 36.0121), (119.7116, 36.0418),
    ),
    "i_lingshan": (
        (120.1536, 35.7648), (120.1669, 35.7856), (120.1754, 35.7885), (120.1869, 35.7526),
        (120.1613, 35.7408), (120.1535, 35.7448), (120.1512, 35.7611), (120.1536, 35.7648),
    ),
    "jm_coast": (
        (120.8454, 36.6121), (120.8802, 36.6013), (120.8888, 36.5791), (120.9080, 36.5683),
        (120.9530, 36.5637), (120.9785, 36.5457), (120.9496, 36.5075), (120.9589, 36.4642),
        (120.9426, 36.4492), (120.9043, 36.4502), (120.9290, 36.4135), (120.9144, 36.4191),
        (120.8870, 36.3897), (120.8913, 36.3761), (120.8674, 36.3670), (120.8482, 36.3864),
        (120.8445, 36.4031), (120.8573, 36.4192), (120.8336, 36.4369), (120.8366, 36.4624),
        (120.7546, 36.4624), (120.7553, 36.4343), (120.7272, 36.4303), (120.6896, 36.3900),
        (120.7396, 36.3280), (120.6622, 36.3327), (120.6514, 36.3221),
    ),
    "b_jm_pd": (
        (120.1653, 36.4715), (120.1379, 36.5420), (120.1504, 36.5726), (120.1982, 36.5938),
        (120.2082, 36.6220), (120.2484, 36.6280),
    ),
    "b_jm_lx": (
        (120.2484, 36.6280), (120.2950, 36.6168), (120.3591, 36.6201), (120.3618, 36.6309),
        (120.3637, 36.6179), (120.3961, 36.6268), (120.4570, 36.6067), (120.4991, 36.6294),
        (120.5311, 36.6206), (120.5388, 36.5723), (120.5722, 36.5803), (120.5866, 36.6029),
        (120.5913, 36.5880), (120.6298, 36.5889),
    ),
    "o_jm": (
        (120.6298, 36.5889), (120.6491, 36.5787), (120.7223, 36.6240), (120.7814, 36.5894),
        (120.8454, 36.6121),
    ),
    "i_tianheng": (
        (120.9852, 36.4132), (120.9767, 36.4174), (120.9589, 36.4136), (120.9429, 36.4176),
        (120.9511, 36.4256), (120.9625, 36.4263), (120.9650, 36.4315), (120.9820, 36.4199),
        (120.9886, 36.4194), (120.9881, 36.4144), (120.9852, 36.4132),
    ),
    "o_pd": (
        (120.0028, 36.4980), (119.9481, 36.5231), (119.9179, 36.4954), (119.9151, 36.5220),
        (119.7220, 36.5625), (119.7246, 36.5808), (119.6197, 36.6387), (119.5250, 36.7650),
        (119.5924, 36.8570), (119.5783, 36.9520), (119.6137, 37.0175), (119.7114, 37.0066),
        (119.7256, 36.9880), (119.7914, 37.0134), (119.9182, 36.9936), (119.9749, 37.0176),
        (120.0204, 36.9988), (120.0439, 37.0194), (120.1516, 37.0119), (120.2039, 37.0437),
    ),
    "b_pd_lx": (
        (120.2039, 37.0437), (120.2469, 37.0300), (120.2727, 37.0393), (120.2931, 37.0296),
        (120.2717, 37.0202), (120.2777, 37.0029), (120.3193, 37.0037), (120.2997, 36.9838),
        (120.3151, 36.9574), (120.2749, 36.9145), (120.2897, 36.8984), (120.2575, 36.8007),
        (120.2668, 36.7033), (120.2929, 36.6668), (120.2875, 36.6440), (120.2484, 36.6280),
    ),
    "o_lx": (
        (120.2039, 37.0437), (120.2315, 37.1253), (120.2590, 37.1141), (120.2967, 37.1319),
        (120.3434, 37.0764), (120.3574, 37.1001), (120.4037, 37.0943), (120.4019, 37.1120),
        (120.4578, 37.1144), (120.5019, 37.1482), (120.5383, 37.1319), (120.5284, 37.0534),
        (120.5450, 37.0408), (120.5759, 37.0584), (120.6092, 37.0234), (120.5555, 36.9603),
        (120.6181, 36.8905), (120.5719, 36.8796), (120.6077, 36.8290), (120.5360, 36.7676),
        (120.5417, 36.7443), (120.5751, 36.7375), (120.5815, 36.6987), (120.6559, 36.6478),
        (120.6298, 36.5889),
    ),
    "sea_limit": (
        (119.7571, 35.5784), (119.8000, 35.4500), (119.9800, 35.3800), (120.2500, 35.4500),
        (120.5500, 35.5800), (120.8500, 35.7500), (121.1000, 35.9200), (121.2000, 36.1000),
        (121.2000, 36.3800), (121.1000, 36.5000), (121.0200, 36.5650), (120.9300, 36.6050),
        (120.8454, 36.6121),
    ),
}

# Each district's outer ring as a chain of arcs; "-name" walks an arc backwards.
DISTRICT_ARCS: dict[str, tuple[str, ...]] = {
    "shinan": ("sn_coast", "b_sn_sb", "b_sn_ls"),
    "shibei": ("sb_coast", "b_sb_lc", "-b_sb_ls", "-b_sn_sb"),
    "licang": ("lc_coast", "b_lc_cy", "-b_lc_ls", "-b_sb_lc"),
    "laoshan": ("ls_coast", "-b_sn_ls", "b_sb_ls", "b_lc_ls", "b_cy_ls", "b_ls_jm"),
    "chengyang": ("cy_coast", "b_cy_jz", "b_cy_jm", "-b_cy_ls", "-b_lc_cy"),
    "huangdao": ("hd_coast", "o_hd", "b_jz_hd"),
    "jimo": ("jm_coast", "-b_ls_jm", "-b_cy_jm", "b_jz_jm", "b_jm_pd", "b_jm_lx", "o_jm"),
    "jiaozhou": ("jz_coast", "-b_jz_hd", "o_jz", "b_jz_pd", "-b_jz_jm", "-b_cy_jz"),
    "pingdu": ("-b_jz_pd", "o_pd", "b_pd_lx", "-b_jm_pd"),
    "laixi": ("-b_pd_lx", "o_lx", "-b_jm_lx"),
}
ISLANDS: dict[str, tuple[str, ...]] = {"huangdao": ("i_lingshan",), "jimo": ("i_tianheng",)}

# The mainland coast from the Haiyang border at Dingzi Bay round Jiaozhou Bay to the
# Rizhao border; closed by sea_limit it is the outline of qingdao_waters.
COAST_ARCS = ("jm_coast", "ls_coast", "sn_coast", "sb_coast", "lc_coast", "cy_coast",
              "jz_coast", "hd_coast")


def chain(arc_refs: Iterable[str]) -> list[Point]:
    """Join arcs end to start into one polyline; an arc that does not connect is a bug."""
    points: list[Point] = []
    for ref in arc_refs:
        arc = ARCS[ref.removeprefix("-")]
        if ref.startswith("-"):
            arc = arc[::-1]
        if points:
            if points[-1] != arc[0]:
                raise ValueError(f"arc {ref} starts at {arc[0]}, not at {points[-1]}")
            arc = arc[1:]
        points.extend(arc)
    return points


def closed_ring(arc_refs: Sequence[str]) -> list[Point]:
    ring = chain(arc_refs)
    if ring[0] != ring[-1]:
        raise ValueError(f"arcs {list(arc_refs)} do not close into a ring")
    return ring


def district_rings() -> dict[str, list[list[Point]]]:
    """Every district's land as rings: mainland first, then its islands."""
    return {district: [closed_ring(refs)] + [list(ARCS[island])
                                             for island in ISLANDS.get(district, ())]
            for district, refs in DISTRICT_ARCS.items()}


def sea_rings() -> list[list[Point]]:
    """qingdao_waters: the outline, then the islands as holes."""
    outline = closed_ring((*COAST_ARCS, "sea_limit"))
    return [outline] + [list(ARCS[island]) for islands in ISLANDS.values()
                        for island in islands]


def coast_lines() -> list[list[Point]]:
    return [chain(COAST_ARCS)] + [list(ARCS[island]) for islands in ISLANDS.values()
                                  for island in islands]


def _signed_area(ring: Sequence[Point]) -> float:
    return sum(a[0] * b[1] - b[0] * a[1] for a, b in itertools.pairwise(ring)) / 2


def _oriented(ring: list[Point], *, counterclockwise: bool) -> list[list[float]]:
    # RFC 7946: outer rings counterclockwise, holes clockwise.
    if (_signed_area(ring) > 0) != counterclockwise:
        ring = ring[::-1]
    return [[lon, lat] for lon, lat in ring]


def _polygon(outer: list[Point], holes: Sequence[list[Point]] = ()) -> list[Any]:
    return [_oriented(outer, counterclockwise=True)] + [
        _oriented(hole, counterclockwise=False) for hole in holes]


def build_geojson() -> dict[str, Any]:
    features = []
    for district, rings in district_rings().items():
        name_zh, name_en = DISTRICTS[district]
        parts = [_polygon(ring) for ring in rings]
        geometry = ({"type": "Polygon", "coordinates": parts[0]} if len(parts) == 1
                    else {"type": "MultiPolygon", "coordinates": parts})
        features.append(_feature({"id": district, "name_zh": name_zh, "name_en": name_en,
                                  "layer": "district"}, geometry))
    features.append(_feature(
        {"id": "coastline", "name_zh": "青岛海岸线", "name_en": "Qingdao coastline",
         "layer": "coastline"},
        {"type": "MultiLineString",
         "coordinates": [[[lon, lat] for lon, lat in line] for line in coast_lines()]}))
    outline, *islands = sea_rings()
    features.append(_feature(
        {"id": "qingdao_waters", "name_zh": "青岛近海", "name_en": "Qingdao coastal waters",
         "layer": "sea"},
        {"type": "Polygon", "coordinates": _polygon(outline, islands)}))
    return {"type": "FeatureCollection", "features": features}


def _feature(properties: dict[str, Any], geometry: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Feature", "properties": properties, "geometry": geometry}


def render_geojson(collection: dict[str, Any]) -> str:
    # One feature per line: small, and a diff still shows which feature changed.
    features = ",\n".join(json.dumps(feature, ensure_ascii=False, separators=(",", ":"))
                          for feature in collection["features"])
    return f'{{"type":"FeatureCollection","features":[\n{features}\n]}}\n'


# --- local geometry in kilometres -------------------------------------------------------

# An equirectangular projection centred on Qingdao: within ~1.5% over the whole city,
# plenty for "is this site 1 km inside its district".
_KM_PER_DEG_LAT = 110.95
_KM_PER_DEG_LON = 111.32 * math.cos(math.radians(36.2))

Segment = tuple[Point, Point]


def _segments(rings: Iterable[Sequence[Point]]) -> list[Segment]:
    return [(a, b) for ring in rings for a, b in itertools.pairwise(ring)]


def _km_to_segment(point: Point, segment: Segment) -> float:
    (px, py), (ax, ay), (bx, by) = (_to_km(p) for p in (point, *segment))
    dx, dy = bx - ax, by - ay
    length_sq = dx * dx + dy * dy
    t = 0.0 if length_sq == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy)
                                              / length_sq))
    return math.hypot(px - ax - t * dx, py - ay - t * dy)


def km_to_nearest(point: Point, segments: Iterable[Segment]) -> float:
    return min(_km_to_segment(point, segment) for segment in segments)


def _to_km(point: Point) -> tuple[float, float]:
    return point[0] * _KM_PER_DEG_LON, point[1] * _KM_PER_DEG_LAT


def _km_between(a: Point, b: Point) -> float:
    (ax, ay), (bx, by) = _to_km(a), _to_km(b)
    return math.hypot(ax - bx, ay - by)



# --- what we grow and raise -------------------------------------------------------------

# product key -> (site kind, name suffix zh, name suffix en)
PRODUCTS: dict[str, tuple[str, str, str]] = {
    "veg_gh": ("greenhouse", "蔬菜智慧温室", "Vegetable Greenhouse"),
    "tomato_gh": ("greenhouse", "番茄温室", "Tomato Greenhouse"),
    "cucumber_gh": ("greenhouse", "黄瓜温室", "Cucumber Greenhouse"),
    "celery_gh": ("greenhouse", "芹菜温室", "Celery Greenhouse"),
    "strawberry_gh": ("greenhouse", "草莓温室", "Strawberry Greenhouse"),
    "melon_gh": ("greenhouse", "甜瓜温室", "Melon Greenhouse"),
    "seedling_gh": ("greenhouse", "育苗温室", "Seedling Greenhouse"),
    "flower_gh": ("greenhouse", "花卉温室", "Flower Greenhouse"),
    "mushroom_gh": ("greenhouse", "食用菌温室", "Mushroom Greenhouse"),
    "wheat": ("field_crop", "小麦玉米大田", "Wheat and Maize Fields"),
    "peanut": ("field_crop", "花生大田", "Peanut Fields"),
    "potato": ("field_crop", "马铃薯大田", "Potato Fields"),
    "soybean": ("field_crop", "大豆大田", "Soybean Fields"),
    "cabbage": ("field_crop", "大白菜基地", "Napa Cabbage Fields"),
    "ginger": ("field_crop", "生姜基地", "Ginger Fields"),
    "taro": ("field_crop", "芋头基地", "Taro Fields"),
    "carrot": ("field_crop", "胡萝卜基地", "Carrot Fields"),
    "grape": ("orchard", "葡萄园", "Vineyard"),
    "apple": ("orchard", "苹果园", "Apple Orchard"),
    "pear": ("orchard", "梨园", "Pear Orchard"),
    "peach": ("orchard", "桃园", "Peach Orchard"),
    "cherry": ("orchard", "樱桃园", "Cherry Orchard"),
    "blueberry": ("orchard", "蓝莓园", "Blueberry Farm"),
    "tea": ("tea_garden", "茶园", "Tea Garden"),
    "pig": ("livestock", "生猪养殖场", "Pig Farm"),
    "black_pig": ("livestock", "黑猪养殖场", "Black Pig Farm"),
    "dairy": ("livestock", "奶牛场", "Dairy Farm"),
    "beef": ("livestock", "肉牛场", "Beef Cattle Farm"),
    "sheep": ("livestock", "肉羊养殖场", "Sheep Farm"),
    "broiler": ("livestock", "肉鸡养殖场", "Broiler Farm"),
    "layer": ("livestock", "蛋鸡养殖场", "Layer Hen Farm"),
}


@dataclass(frozen=True)
class Town:
    """A town or street with farms: one site per product, named after the town."""

    district: str
    name_zh: str  # as written in an address: "大泽山镇", "王哥庄街道"
    name_en: str  # pinyin without the level: "Dazeshan"
    lon: float  # roughly where its farmland is
    lat: float
    products: str  # keys of PRODUCTS, space separated


# T(district, town_zh, town_en, lon, lat, "product product ...")
T = Town
FARM_TOWNS: tuple[Town, ...] = (
    # Pingdu: the grain and vegetable heartland; Dazeshan grapes, Majiagou celery (Liyuan),
    # Mingcun melons, Jiudian apples.
    T("pingdu", "大泽山镇", "Dazeshan", 120.02, 36.96, "grape pear peach"),
    T("pingdu", "旧店镇", "Jiudian", 120.12, 36.95, "apple peach"),
    T("pingdu", "云山镇", "Yunshan", 120.05, 36.88, "cherry apple"),
    T("pingdu", "店子镇", "Dianzi", 119.86, 36.92, "wheat soybean veg_gh"),
    T("pingdu", "田庄镇", "Tianzhuang", 119.75, 36.95, "wheat beef"),
    T("pingdu", "新河镇", "Xinhe", 119.66, 36.94, "peanut strawberry_gh"),
    T("pingdu", "明村镇", "Mingcun", 119.72, 36.82, "melon_gh peanut wheat"),
    T("pingdu", "白沙河街道", "Baishahe", 119.88, 36.75, "veg_gh strawberry_gh"),
    T("pingdu", "李园街道", "Liyuan", 119.93, 36.81, "celery_gh tomato_gh"),
    T("pingdu", "同和街道", "Tonghe", 119.99, 36.74, "seedling_gh flower_gh"),
    T("pingdu", "麻兰镇", "Malan", 120.10, 36.78, "potato ginger dairy"),
    T("pingdu", "古岘镇", "Guxian", 120.20, 36.76, "wheat peanut tomato_gh"),
    T("pingdu", "蓼兰镇", "Liaolan", 120.08, 36.67, "wheat cabbage dairy"),
    T("pingdu", "崔家集镇", "Cuijiaji", 119.93, 36.62, "veg_gh cucumber_gh potato"),
    T("pingdu", "南村镇", "Nancun", 120.10, 36.57, "veg_gh tomato_gh pig"),
    T("pingdu", "仁兆镇", "Renzhao", 120.19, 36.65, "cucumber_gh peanut"),
    # Laixi: Malianzhuang melons, Dianbu carrots, dairy and poultry.
    T("laixi", "望城街道", "Wangcheng", 120.47, 36.86, "veg_gh seedling_gh"),
    T("laixi", "沽河街道", "Guhe", 120.40, 36.86, "wheat flower_gh peach"),
    T("laixi", "水集街道", "Shuiji", 120.52, 36.90, "mushroom_gh"),
    T("laixi", "姜山镇", "Jiangshan", 120.46, 36.70, "veg_gh taro broiler"),
    T("laixi", "夏格庄镇", "Xiagezhuang", 120.37, 36.77, "peanut dairy wheat"),
    T("laixi", "店埠镇", "Dianbu", 120.50, 36.73, "carrot cucumber_gh layer"),
    T("laixi", "院上镇", "Yuanshang", 120.47, 36.98, "apple pear peanut"),
    T("laixi", "日庄镇", "Rizhuang", 120.50, 37.06, "peach sheep"),
    T("laixi", "南墅镇", "Nanshu", 120.40, 37.04, "apple beef"),
    T("laixi", "河头店镇", "Hetoudian", 120.53, 36.95, "pear cherry layer"),
    T("laixi", "马连庄镇", "Malianzhuang", 120.34, 37.02, "melon_gh wheat potato"),
    T("laixi", "李权庄镇", "Liquanzhuang", 120.50, 36.80, "strawberry_gh pig"),
    # Jimo
    T("jimo", "移风店镇", "Yifengdian", 120.30, 36.55, "tomato_gh cabbage dairy wheat"),
    T("jimo", "段泊岚镇", "Duanbolan", 120.40, 36.52, "veg_gh potato pig"),
    T("jimo", "灵山街道", "Lingshan", 120.46, 36.48, "strawberry_gh peanut"),
    T("jimo", "龙山街道", "Longshan", 120.51, 36.45, "grape veg_gh"),
    T("jimo", "大信街道", "Daxin", 120.33, 36.43, "veg_gh grape"),
    T("jimo", "蓝村街道", "Lancun", 120.24, 36.43, "wheat broiler"),
    T("jimo", "北安街道", "Bei'an", 120.40, 36.44, "flower_gh seedling_gh"),
    T("jimo", "通济街道", "Tongji", 120.44, 36.41, "mushroom_gh"),
    T("jimo", "龙泉街道", "Longquan", 120.53, 36.39, "cherry layer"),
    T("jimo", "温泉街道", "Wenquan", 120.62, 36.42, "blueberry tea"),
    T("jimo", "鳌山卫街道", "Aoshanwei", 120.62, 36.36, "tea strawberry_gh"),
    T("jimo", "田横镇", "Tianheng", 120.87, 36.50, "peach blueberry cucumber_gh"),
    T("jimo", "金口镇", "Jinkou", 120.76, 36.53, "taro sheep peanut"),
    # Jiaozhou: Jiaozhou napa cabbage, Licha black pigs.
    T("jiaozhou", "李哥庄镇", "Ligezhuang", 120.15, 36.34, "veg_gh cabbage"),
    T("jiaozhou", "胶莱街道", "Jiaolai", 120.05, 36.42, "cabbage wheat dairy"),
    T("jiaozhou", "胶北街道", "Jiaobei", 120.02, 36.36, "potato layer cherry"),
    T("jiaozhou", "胶东街道", "Jiaodong", 120.10, 36.30, "strawberry_gh tomato_gh"),
    T("jiaozhou", "胶西街道", "Jiaoxi", 119.92, 36.30, "wheat pig"),
    T("jiaozhou", "铺集镇", "Puji", 119.78, 36.14, "peanut beef ginger"),
    T("jiaozhou", "里岔镇", "Licha", 119.84, 36.10, "black_pig ginger peanut"),
    T("jiaozhou", "洋河镇", "Yanghe", 119.94, 36.12, "blueberry apple"),
    T("jiaozhou", "九龙街道", "Jiulong", 120.05, 36.22, "seedling_gh veg_gh"),
    T("jiaozhou", "三里河街道", "Sanlihe", 120.02, 36.27, "flower_gh"),
    T("jiaozhou", "营海街道", "Yinghai", 120.07, 36.17, "veg_gh cabbage"),
    # Huangdao (West Coast New Area): Haiqing tea and the hill tea towns, blueberries.
    T("huangdao", "海青镇", "Haiqing", 119.66, 35.70, "tea blueberry"),
    T("huangdao", "大场镇", "Dachang", 119.72, 35.66, "tea sheep"),
    T("huangdao", "泊里镇", "Boli", 119.80, 35.70, "tea pig"),
    T("huangdao", "琅琊镇", "Langya", 119.89, 35.68, "tea peanut"),
    T("huangdao", "藏马镇", "Cangma", 119.78, 35.82, "tea grape"),
    T("huangdao", "六汪镇", "Liuwang", 119.80, 35.92, "tea blueberry"),
    T("huangdao", "宝山镇", "Baoshan", 119.76, 35.97, "tea beef"),
    T("huangdao", "大村镇", "Dacun", 119.92, 35.96, "tea blueberry cherry"),
    T("huangdao", "张家楼街道", "Zhangjialou", 119.98, 35.84, "tea blueberry"),
    T("huangdao", "王台镇", "Wangtai", 120.00, 36.05, "veg_gh broiler"),
    T("huangdao", "隐珠街道", "Yinzhu", 119.98, 35.90, "seedling_gh"),
    T("huangdao", "灵山卫街道", "Lingshanwei", 120.06, 35.93, "strawberry_gh"),
    T("huangdao", "铁山街道", "Tieshan", 120.07, 36.02, "cherry"),
    # Laoshan: Laoshan tea on the mountain's slopes; Beizhai cherries; Dengying pears.
    T("laoshan", "王哥庄街道", "Wanggezhuang", 120.63, 36.27, "tea"),
    T("laoshan", "王哥庄街道晓望", "Xiaowang", 120.655, 36.245, "tea"),
    T("laoshan", "王哥庄街道港东", "Gangdong", 120.645, 36.300, "tea"),
    T("laoshan", "王哥庄街道青山", "Qingshan", 120.665, 36.195, "tea"),
    T("laoshan", "北宅街道", "Beizhai", 120.53, 36.22, "tea cherry"),
    T("laoshan", "沙子口街道", "Shazikou", 120.55, 36.13, "tea"),
    T("laoshan", "沙子口街道流清河", "Liuqinghe", 120.61, 36.14, "tea"),
    T("laoshan", "沙子口街道登瀛", "Dengying", 120.575, 36.14, "pear tea"),
    # Chengyang
    T("chengyang", "上马街道", "Shangma", 120.20, 36.26, "veg_gh tomato_gh"),
    T("chengyang", "棘洪滩街道", "Jihongtan", 120.27, 36.31, "wheat strawberry_gh"),
    T("chengyang", "惜福镇街道", "Xifuzhen", 120.49, 36.29, "cherry tea layer"),
    T("chengyang", "夏庄街道", "Xiazhuang", 120.44, 36.26, "seedling_gh peach"),
    T("chengyang", "河套街道", "Hetao", 120.19, 36.23, "flower_gh"),
    # Licang: the 2014 horticultural expo grounds are the city's only farmland left.
    T("licang", "世园街道", "Shiyuan", 120.46, 36.18, "flower_gh"),
)
del T


@dataclass(frozen=True)
class Waters:
    """A named stretch of water with ``count`` ocean sites of one kind."""

    kind: str
    name_zh: str
    name_en: str
    lon: float
    lat: float
    count: int = 1
    district: str | None = None  # if set, the nearest district must be this one
    spread_km: float = 2.0  # how far from (lon, lat) a site may drift


# W(kind, name_zh, name_en, lon, lat, count=1, district=None, spread_km=2.0)
W = Waters
OCEAN_WATERS: tuple[Waters, ...] = (
    # Shellfish and kelp rafts: in Jiaozhou Bay and along the Laoshan and Jimo coast.
    W("aquaculture_raft", "胶州湾红岛贝类筏式养殖区", "Hongdao Shellfish Rafts, Jiaozhou Bay",
      120.27, 36.163, 3, "chengyang"),
    W("aquaculture_raft", "胶州湾大沽河口蛤蜊筏式养殖区", "Dagu Estuary Clam Rafts, Jiaozhou Bay",
      120.165, 36.16, 2),
    W("aquaculture_raft", "胶州湾女姑口牡蛎筏式养殖区", "Nügukou Oyster Rafts, Jiaozhou Bay",
      120.335, 36.19),
    W("aquaculture_raft", "胶州湾红石崖贝类筏式养殖区", "Hongshiya Shellfish Rafts, Jiaozhou Bay",
      120.15, 36.11, 1, "huangdao"),
    W("aquaculture_raft", "王哥庄海带筏式养殖区", "Wanggezhuang Kelp Rafts",
      120.705, 36.275, 2, "laoshan"),
    W("aquaculture_raft", "仰口湾扇贝筏式养殖区", "Yangkou Bay Scallop Rafts",
      120.705, 36.23, 2, "laoshan"),
    W("aquaculture_raft", "流清河海带筏式养殖区", "Liuqinghe Kelp Rafts",
      120.625, 36.10, 1, "laoshan"),
    W("aquaculture_raft", "崂山湾扇贝筏式养殖区", "Laoshan Bay Scallop Rafts",
      120.715, 36.31),
    W("aquaculture_raft", "鳌山湾牡蛎筏式养殖区", "Aoshan Bay Oyster Rafts",
      120.78, 36.41, 3, "jimo"),
    W("aquaculture_raft", "田横岛海带筏式养殖区", "Tianheng Island Kelp Rafts",
      120.955, 36.395, 2, "jimo"),
    W("aquaculture_raft", "丁字湾贝类筏式养殖区", "Dingzi Bay Shellfish Rafts",
      120.95, 36.585, 1, "jimo", 1.0),
    W("aquaculture_raft", "沙子口湾海带筏式养殖区", "Shazikou Bay Kelp Rafts",
      120.57, 36.085, 1, "laoshan"),
    # Offshore cages: in the open sea off Huangdao.
    W("cage_farm", "灵山岛东侧深远海网箱", "Lingshan Island East Offshore Cages",
      120.215, 35.765, 2, "huangdao"),
    W("cage_farm", "灵山岛南侧深远海网箱", "Lingshan Island South Offshore Cages",
      120.17, 35.71, 2, "huangdao"),
    W("cage_farm", "大珠山外海深远海网箱", "Dazhushan Offshore Cages",
      120.08, 35.72, 3, "huangdao"),
    W("cage_farm", "斋堂岛外海深远海网箱", "Zhaitang Island Offshore Cages",
      119.97, 35.59, 2, "huangdao"),
    W("cage_farm", "董家口外海深远海网箱", "Dongjiakou Offshore Cages",
      119.84, 35.52, 1, "huangdao"),
    # Marine ranches: artificial reefs in the bays.
    W("marine_ranch", "琅琊台湾海洋牧场", "Langyatai Bay Marine Ranch",
      119.97, 35.63, 3, "huangdao", 2.5),
    W("marine_ranch", "灵山湾海洋牧场", "Lingshan Bay Marine Ranch",
      120.13, 35.855, 3, "huangdao", 2.5),
    W("marine_ranch", "鳌山湾海洋牧场", "Aoshan Bay Marine Ranch",
      120.79, 36.35, 2, "jimo"),
    W("marine_ranch", "崂山湾海洋牧场", "Laoshan Bay Marine Ranch",
      120.75, 36.27, 3, None, 2.5),
    W("marine_ranch", "大公岛海洋牧场", "Dagong Island Marine Ranch",
      120.84, 35.91, 2, None, 1.5),
    W("marine_ranch", "竹岔岛海洋牧场", "Zhucha Island Marine Ranch",
      120.33, 35.925, 1, "huangdao", 1.0),
    # Port terminals: Qianwan and the Huangdao oil port, the old Dagang port (now the
    # cruise home port), Dongjiakou, and the fishing ports of Aoshan Bay and Shazikou.
    W("port_terminal", "前湾港区集装箱码头", "Qianwan Container Terminal",
      120.245, 36.045, 1, "huangdao", 0.8),
    W("port_terminal", "前湾港区自动化集装箱码头", "Qianwan Automated Container Terminal",
      120.215, 36.072, 1, "huangdao", 0.8),
    W("port_terminal", "黄岛油港区原油码头", "Huangdao Oil Port Crude Terminal",
      120.245, 36.067, 1, "huangdao", 0.8),
    W("port_terminal", "大港港区邮轮母港码头", "Dagang Cruise Home Port Terminal",
      120.293, 36.093, 1, "shibei", 0.5),
    W("port_terminal", "大港港区客运码头", "Dagang Passenger Terminal",
      120.312, 36.118, 1, "shibei", 0.5),
    W("port_terminal", "董家口港区矿石码头", "Dongjiakou Ore Terminal",
      119.81, 35.585, 1, "huangdao", 1.0),
    W("port_terminal", "董家口港区液化天然气码头", "Dongjiakou LNG Terminal",
      119.79, 35.565, 1, "huangdao", 1.0),
    W("port_terminal", "董家口港区原油码头", "Dongjiakou Crude Oil Terminal",
      119.83, 35.61, 1, "huangdao", 1.0),
    W("port_terminal", "鳌山湾女岛渔港码头", "Nüdao Fishing Port, Aoshan Bay",
      120.72, 36.318, 1, "jimo", 0.8),
    W("port_terminal", "沙子口渔港码头", "Shazikou Fishing Port",
      120.556, 36.095, 1, "laoshan", 0.5),
    # Ecological buoys: a grid over Jiaozhou Bay and the approaches, and offshore.
    W("ecological_buoy", "胶州湾中部生态监测浮标", "Central Jiaozhou Bay Ecological Buoy",
      120.25, 36.12),
    W("ecological_buoy", "胶州湾北部生态监测浮标", "Northern Jiaozhou Bay Ecological Buoy",
      120.21, 36.165),
    W("ecological_buoy", "胶州湾东部生态监测浮标", "Eastern Jiaozhou Bay Ecological Buoy",
      120.31, 36.145),
    W("ecological_buoy", "胶州湾西部生态监测浮标", "Western Jiaozhou Bay Ecological Buoy",
      120.18, 36.10),
    W("ecological_buoy", "胶州湾湾口生态监测浮标", "Jiaozhou Bay Mouth Ecological Buoy",
      120.275, 36.03, 1, None, 0.5),
    W("ecological_buoy", "崂山头外海生态监测浮标", "Off Laoshan Head Ecological Buoy",
      120.82, 36.12),
    W("ecological_buoy", "大公岛以南生态监测浮标", "South of Dagong Island Ecological Buoy",
      120.88, 35.84),
    W("ecological_buoy", "灵山岛以南生态监测浮标", "South of Lingshan Island Ecological Buoy",
      120.20, 35.60),
    W("ecological_buoy", "田横岛以东生态监测浮标", "East of Tianheng Island Ecological Buoy",
      121.06, 36.40),
    W("ecological_buoy", "竹岔岛以南生态监测浮标", "South of Zhucha Island Ecological Buoy",
      120.32, 35.84),
    W("ecological_buoy", "琅琊台外海生态监测浮标", "Off Langyatai Ecological Buoy",
      119.97, 35.47),
    W("ecological_buoy", "青岛外海生态监测浮标", "Qingdao Offshore Ecological Buoy",
      120.60, 35.75),
    W("ecological_buoy", "石老人外海生态监测浮标", "Off Shilaoren Ecological Buoy",
      120.50, 35.98),
    W("ecological_buoy", "崂山湾口生态监测浮标", "Laoshan Bay Mouth Ecological Buoy",
      120.86, 36.25),
    # Coastal stations: just off the shore.
    W("coastal_station", "团岛海岸观测站", "Tuandao Coastal Station",
      120.272, 36.048, 1, "shinan", 0.5),
    W("coastal_station", "汇泉湾海岸观测站", "Huiquan Bay Coastal Station",
      120.345, 36.036, 1, "shinan", 0.4),
    W("coastal_station", "石老人海岸观测站", "Shilaoren Coastal Station",
      120.48, 36.078, 1, "laoshan", 0.5),
    W("coastal_station", "太清宫海岸观测站", "Taiqing Palace Coastal Station",
      120.665, 36.118, 1, "laoshan", 0.5),
    W("coastal_station", "仰口海岸观测站", "Yangkou Coastal Station",
      120.69, 36.245, 1, "laoshan", 0.5),
    W("coastal_station", "鳌山卫海岸观测站", "Aoshanwei Coastal Station",
      120.69, 36.318, 1, "jimo", 0.5),
    W("coastal_station", "田横海岸观测站", "Tianheng Coastal Station",
      120.885, 36.362, 1, "jimo", 0.5),
    W("coastal_station", "金沙滩海岸观测站", "Golden Beach Coastal Station",
      120.255, 35.953, 1, "huangdao", 0.5),
    W("coastal_station", "灵山卫海岸观测站", "Lingshanwei Coastal Station",
      120.105, 35.872, 1, "huangdao", 0.5),
    W("coastal_station", "琅琊台海岸观测站", "Langyatai Coastal Station",
      119.935, 35.625, 1, "huangdao", 0.5),
    W("coastal_station", "大珠山海岸观测站", "Dazhushan Coastal Station",
      120.045, 35.765, 1, "huangdao", 0.5),
    W("coastal_station", "红岛海岸观测站", "Hongdao Coastal Station",
      120.305, 36.177, 1, "chengyang", 0.5),
)
del W


# --- placement rules ----------------------------------------------------------------------

# Kilometres from the coast an ocean site of each kind may lie (min, max). The minimum
# keeps every site unambiguously at sea on a map simplified to a few hundred metres.
OCEAN_COAST_KM: dict[str, tuple[float, float]] = {
    "aquaculture_raft": (0.5, 8.0),
    "cage_farm": (2.0, 40.0),
    "marine_ranch": (1.0, 30.0),
    "port_terminal": (0.5, 2.5),
    "ecological_buoy": (1.0, 60.0),
    "coastal_station": (0.5, 2.0),
}
FARM_MARGIN_KM = 1.0  # farms stay this far inside their district: no border ambiguity
MIN_SPACING_KM = 0.8  # no two sites closer than this
FARM_SPREAD_KM = 3.0  # how far from its town's point a farm may lie
MAX_TRIES = 400


class PlacementError(RuntimeError):
    """A planned site found no spot that passes the rules: fix its anchor in the plan."""


class _Map:
    """The generator's view of the geometry, precomputed once per run, and the rules."""

    def __init__(self) -> None:
        self.district_rings = district_rings()
        self.district_edges = {district: _segments(rings)
                               for district, rings in self.district_rings.items()}
        self.sea = sea_rings()
        self.coast_edges = _segments(coast_lines())

    def district_at(self, point: Point) -> str | None:
        for district, rings in self.district_rings.items():
            if any(point_in_polygon(*point, ring) for ring in rings):
                return district
        return None

    def in_sea(self, point: Point) -> bool:
        outline, *islands = self.sea
        return point_in_polygon(*point, outline) and not any(
            point_in_polygon(*point, island) for island in islands)

    def nearest_district(self, point: Point) -> str:
        return min(self.district_edges,
                   key=lambda district: km_to_nearest(point, self.district_edges[district]))

    def farm_fits(self, district: str, point: Point) -> bool:
        return (self.district_at(point) == district
                and km_to_nearest(point, self.district_edges[district]) >= FARM_MARGIN_KM)

    def ocean_site_fits(self, kind: str, point: Point) -> bool:
        if self.district_at(point) is not None or not self.in_sea(point):
            return False
        near_km, far_km = OCEAN_COAST_KM[kind]
        return near_km <= km_to_nearest(point, self.coast_edges) <= far_km


def build_sites() -> list[Site]:
    rng = random.Random(SEED)
    geo = _Map()
    placed: list[Point] = []
    return [*_farm_rows(rng, geo, placed), *_ocean_rows(rng, geo, placed)]


def _farm_rows(rng: random.Random, geo: _Map, placed: list[Point]) -> Iterator[Site]:
    planned = ((town, product) for town in FARM_TOWNS for product in town.products.split())
    for number, (town, product) in enumerate(planned, start=1):
        kind, suffix_zh, suffix_en = PRODUCTS[product]
        district_zh, district_en = DISTRICTS[town.district]
        name_en = f"{town.name_en} {suffix_en}, {district_en}"
        fits = functools.partial(geo.farm_fits, town.district)
        lon, lat = _place(rng, (town.lon, town.lat), FARM_SPREAD_KM, fits, placed, name_en)
        yield Site(f"ag-{number:03d}", f"{district_zh}{town.name_zh}{suffix_zh}", name_en,
                      kind, SITE_KINDS[kind].domain.value, town.district, lat, lon)


def _ocean_rows(rng: random.Random, geo: _Map, placed: list[Point]) -> Iterator[Site]:
    planned = ((waters, index) for waters in OCEAN_WATERS
               for index in range(1, waters.count + 1))
    for number, (waters, index) in enumerate(planned, start=1):
        name_zh, name_en = _numbered(waters, index)
        fits = functools.partial(geo.ocean_site_fits, waters.kind)
        lon, lat = _place(rng, (waters.lon, waters.lat), waters.spread_km, fits, placed,
                          name_en)
        district = geo.nearest_district((lon, lat))
        if waters.district is not None and district != waters.district:
            raise PlacementError(f"{name_en}: nearest district is {district}, "
                                 f"the plan says {waters.district}")
        yield Site(f"oc-{number:03d}", name_zh, name_en, waters.kind,
                      SITE_KINDS[waters.kind].domain.value, district, lat, lon)


def _numbered(waters: Waters, index: int) -> tuple[str, str]:
    """Names of the index-th site of a stretch of water: 灵山湾海洋牧场2号, "... No. 2"."""
    if waters.count == 1:
        return waters.name_zh, waters.name_en
    head, comma, tail = waters.name_en.partition(", ")
    return f"{waters.name_zh}{index}号", f"{head} No. {index}{comma}{tail}"


def _place(rng: random.Random, anchor: Point, spread_km: float,
           fits: Callable[[Point], bool], placed: list[Point], label: str) -> Point:
    """A seeded random spot within spread_km of anchor that fits and keeps its distance
    from every site placed before; it is appended to ``placed``."""
    for _ in range(MAX_TRIES):
        point = _jitter(rng, anchor, spread_km)
        if fits(point) and all(_km_between(point, other) >= MIN_SPACING_KM
                               for other in placed):
            placed.append(point)
            return point
    raise PlacementError(f"{label}: no spot within {spread_km} km of {anchor} "
                         f"passes the placement rules after {MAX_TRIES} tries")


def _jitter(rng: random.Random, anchor: Point, spread_km: float) -> Point:
    # Uniform over the disc; rounded as in the CSV so the rules hold for what is written.
    distance = spread_km * math.sqrt(rng.random())
    bearing = 2 * math.pi * rng.random()
    lon = anchor[0] + distance * math.sin(bearing) / _KM_PER_DEG_LON
    lat = anchor[1] + distance * math.cos(bearing) / _KM_PER_DEG_LAT
    return round(lon, 5), round(lat, 5)


def render_sites_csv(rows: Iterable[Site]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([row.id, row.name_zh, row.name_en, row.kind, row.domain, row.district,
                         f"{row.lat:.5f}", f"{row.lon:.5f}"])
    return buffer.getvalue()


# --- entry points -------------------------------------------------------------------------

def write_sites(path: Path | str = HERE / "sites.csv") -> Path:
    return _write(Path(path), render_sites_csv(build_sites()))


def write_geojson(path: Path | str = HERE / "qingdao.geojson") -> Path:
    return _write(Path(path), render_geojson(build_geojson()))


def _write(path: Path, text: str) -> Path:
    # Bytes, not text mode: "\n" line ends on every platform, so the output is identical.
    path.write_bytes(text.encode("utf-8"))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tidefield.protocol.registry.generate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=Path, default=HERE / "sites.csv",
                        help="where to write sites.csv (default: the packaged file)")
    parser.add_argument("--geojson", type=Path, default=HERE / "qingdao.geojson",
                        help="where to write qingdao.geojson (default: the packaged file)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the files differ from what would be")
    args = parser.parse_args(argv)

    sites_text = render_sites_csv(build_sites())
    parse_sites(sites_text)  # never write a file the loader would refuse
    outputs = {args.sites: sites_text, args.geojson: render_geojson(build_geojson())}
    if args.check:
        stale = [path for path, text in outputs.items()
                 if not path.exists() or path.read_bytes() != text.encode("utf-8")]
        for path in stale:
            print(f"stale: {path} (run python -m tidefield.protocol.registry.generate)",
                  file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs.items():
        print(f"wrote {_write(path, text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
