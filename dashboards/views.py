"""Pure transforms from API answers to what the pages draw: tables, the map, charts.

No Streamlit here (pages only wire widgets to these), so tests call them directly.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import altair as alt
import pandas as pd
import pydeck as pdk

from tidefield.protocol.catalog import AGENT_METRICS, METRICS

from .i18n import (
    Lang,
    district_name,
    kind_name,
    label,
    metric_name,
    rule_name,
    site_name,
    t,
)

# Operators work in Qingdao: every time on screen is China Standard Time.
DISPLAY_TZ = "Asia/Shanghai"

# --- site state ------------------------------------------------------------------------
# RGB per overview state; a site the overview does not mention has no devices reporting.
STATE_COLORS: dict[str, tuple[int, int, int]] = {
    "ok": (34, 160, 80), "alert": (220, 40, 40), "offline": (130, 130, 130)}
STATE_RADIUS_M = {"ok": 900, "alert": 1600, "offline": 800}  # alerting sites stand out
STATES = tuple(STATE_COLORS)
SEVERITIES = ("critical", "warning", "info")
SEVERITY_COLORS = {"critical": "#d62828", "warning": "#f77f00", "info": "#457b9d"}
CATEGORY_COLORS = {"fault": "#9b5de5", "event": "#d62828"}


def site_frame(sites: list[dict], overview: dict, lang: Lang) -> pd.DataFrame:
    """One row per site: registry fields, its state and counts, and display labels."""
    by_id = {s["site_id"]: s for s in overview.get("sites", [])}
    rows = []
    for site in sites:
        state = by_id.get(site["id"], {})
        code = state.get("state", "offline")
        rows.append({
            "id": site["id"], "name": site_name(site, lang), "kind": site["kind"],
            "kind_label": kind_name(site["kind"], lang), "district": site["district"],
            "district_label": district_name(site["district"], lang),
            "lat": site["lat"], "lon": site["lon"], "state": code,
            "state_label": label("state", code, lang),
            "open_alerts": int(state.get("open_alerts", 0)),
            "devices_online": int(state.get("devices_online", 0)),
            "devices_offline": int(state.get("devices_offline", 0)),
            "color": [*STATE_COLORS.get(code, STATE_COLORS["offline"]), 230],
            "radius": STATE_RADIUS_M.get(code, STATE_RADIUS_M["offline"]),
        })
    return pd.DataFrame(rows, columns=[
        "id", "name", "kind", "kind_label", "district", "district_label", "lat", "lon",
        "state", "state_label", "open_alerts", "devices_online", "devices_offline", "color",
        "radius"])


def filter_sites(frame: pd.DataFrame, *, kinds: list[str] | None = None,
                 districts: list[str] | None = None,
                 states: list[str] | None = None) -> pd.DataFrame:
    mask = pd.Series(True, index=frame.index)
    if kinds:
        mask &= frame["kind"].isin(kinds)
    if districts:
        mask &= frame["district"].isin(districts)
    if states:
        mask &= frame["state"].isin(states)
    return frame[mask]


def open_alert_total(overview: dict) -> int:
    return int(sum(overview.get("open_alerts_by_severity", {}).values()))


# --- the map -------------------------------------------------------------------------
SITE_LAYER_ID = "sites"
QINGDAO_VIEW = pdk.ViewState(latitude=36.25, longitude=120.30, zoom=7.7)
# Drawn last, so on top: an alerting site is never hidden under an offline neighbour.
_DRAW_ORDER = {"offline": 0, "ok": 1, "alert": 2}
_LAYER_STYLE: dict[str, dict[str, Any]] = {
    # drawn bottom to top
    "sea": {"get_fill_color": [200, 225, 245, 255], "stroked": False},
    "district": {"get_fill_color": [246, 243, 234, 255], "get_line_color": [150, 150, 150],
                 "line_width_min_pixels": 1},
    "coastline": {"get_line_color": [40, 90, 160], "line_width_min_pixels": 1.5,
                  "filled": False},
}


def site_map(frame: pd.DataFrame, geojson: dict, lang: Lang, *,
             tiles: bool = False) -> pdk.Deck:
    """Districts, sea and coastline from the bundled GeoJSON, sites as coloured dots.

    Without ``tiles`` no basemap is requested at all (``map_provider=None``), so the map
    works on a site network with no internet; with it, Carto tiles lie underneath.
    """
    layers = []
    for layer, style in _LAYER_STYLE.items():
        features = [f for f in geojson["features"] if f["properties"].get("layer") == layer]
        layers.append(pdk.Layer("GeoJsonLayer", id=f"geo-{layer}",
                                data={"type": "FeatureCollection", "features": features},
                                pickable=False, **style))
    ordered = frame.sort_values("state", key=lambda s: s.map(_DRAW_ORDER), kind="stable")
    records = ordered[["id", "name", "kind_label", "district_label", "state_label",
                       "open_alerts", "lat", "lon", "color", "radius"]].to_dict("records")
    layers.append(pdk.Layer(
        "ScatterplotLayer", id=SITE_LAYER_ID, data=records, get_position="[lon, lat]",
        get_fill_color="color", get_line_color=[255, 255, 255], stroked=True,
        line_width_min_pixels=1, get_radius="radius", radius_min_pixels=4,
        radius_max_pixels=16,
        pickable=True, auto_highlight=True))
    tooltip = {"html": "<b>{name}</b> ({id})<br/>{kind_label} · {district_label}<br/>"
                       f"{t('col.state', lang)}: {{state_label}} · "
                       f"{t('col.open_alerts', lang)}: {{open_alerts}}"}
    if tiles:
        return pdk.Deck(layers=layers, initial_view_state=QINGDAO_VIEW, map_style=None,
                        tooltip=tooltip)
    return pdk.Deck(layers=layers, initial_view_state=QINGDAO_VIEW, map_provider=None,
                    tooltip=tooltip)


def picked_site(selection: Any) -> str | None:
    """The site id a click on the map picked, from st.pydeck_chart's selection state."""
    try:
        objects = selection["selection"]["objects"].get(SITE_LAYER_ID) or []
    except (KeyError, TypeError, AttributeError):
        return None
    return objects[0].get("id") if objects else None


# --- time series ---------------------------------------------------------------------
RANGES: dict[str, timedelta] = {"6h": timedelta(hours=6), "24h": timedelta(hours=24),
                                "7d": timedelta(days=7), "30d": timedelta(days=30)}
# Longest span each resolution serves with at most ~1,500 points per minute-sampled
# series; longer ranges come from the rollups, never from raw rows.
_BUCKET_LIMITS = ((timedelta(hours=12), "raw"), (timedelta(days=4), "5m"),
                  (timedelta(days=62), "1h"))


def choose_bucket(span: timedelta) -> str:
    for limit, bucket in _BUCKET_LIMITS:
        if span <= limit:
            return bucket
    return "1d"


def _local_iso(value: str | datetime) -> str:
    stamp = local(value)
    assert stamp is not None  # local() answers None only for None
    return stamp.isoformat()


def local(value: str | datetime | None) -> pd.Timestamp | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.tz_convert(DISPLAY_TZ)


def readings_frame(answer: dict) -> pd.DataFrame:
    """time, value (the mean of a bucket), min and max (equal to value for raw rows)."""
    if answer.get("bucket") == "raw":
        points = answer.get("points") or []
        frame = pd.DataFrame(points, columns=["time", "value"])
        frame["min"] = frame["value"]
        frame["max"] = frame["value"]
    else:
        buckets = answer.get("buckets") or []
        frame = pd.DataFrame(buckets, columns=["time", "count", "mean", "min", "max", "last"])
        frame = frame.rename(columns={"mean": "value"})[["time", "value", "min", "max"]]
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601").dt.tz_convert(
        DISPLAY_TZ)
    return frame.astype({"value": float, "min": float, "max": float})


def anomalies_frame(items: list[dict], lang: Lang) -> pd.DataFrame:
    frame = pd.DataFrame(items, columns=["series_id", "time", "value", "score", "component",
                                         "category"])
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601").dt.tz_convert(
        DISPLAY_TZ)
    frame["kind"] = [t(f"chart.anomaly_{c}", lang) for c in frame["category"]]
    return frame


def series_chart(frame: pd.DataFrame, *, title: str, unit: str, lang: Lang,
                 anomalies: pd.DataFrame | None = None,
                 alerts: list[dict] | None = None,
                 window: tuple[datetime, datetime] | None = None,
                 maintenance: list[dict] | None = None) -> alt.LayerChart:
    """The line (with the min-max band of buckets), anomalies as points, alerts as
    shaded spans, maintenance windows as grey spans."""
    x_scale = alt.Scale(domain=[_local_iso(window[0]), _local_iso(window[1])]
                        ) if window else alt.Undefined
    x = alt.X("time:T", title=None, scale=x_scale)
    base = alt.Chart(frame)
    layers = []
    if maintenance:
        spans = pd.DataFrame([{
            "start": _local_iso(w["starts_at"]), "end": _local_iso(w["ends_at"]),
            "maintenance": f"{t('chart.maintenance', lang)} #{w['id']} {w.get('reason', '')}"}
            for w in maintenance])
        layers.append(alt.Chart(spans).mark_rect(opacity=0.25, color="#7a7a7a").encode(
            x=alt.X("start:T", scale=x_scale), x2="end:T",
            tooltip=[alt.Tooltip("maintenance:N", title=t("chart.maintenance", lang))]))
    if alerts:
        end = _local_iso(window[1]) if window else frame["time"].max().isoformat()
        spans = pd.DataFrame([{
            "start": _local_iso(a["opened_at"]),
            "end": _local_iso(a["closed_at"]) if a.get("closed_at") else end,
            "alert": f"#{a['id']} {rule_name(a['rule'], lang)}",
            "severity": label("severity", a["severity"], lang)} for a in alerts])
        layers.append(alt.Chart(spans).mark_rect(opacity=0.15, color="#d62828").encode(
            x=alt.X("start:T", scale=x_scale), x2="end:T",
            tooltip=[alt.Tooltip("alert:N", title=t("chart.alert", lang)),
                     alt.Tooltip("severity:N", title=t("col.severity", lang))]))
    if (frame["min"] != frame["max"]).any():
        layers.append(base.mark_area(opacity=0.2).encode(x=x, y="min:Q", y2="max:Q"))
    layers.append(base.mark_line().encode(
        x=x, y=alt.Y("value:Q", title=unit or None, scale=alt.Scale(zero=False)),
        tooltip=[alt.Tooltip("time:T", title=t("col.time", lang), format="%Y-%m-%d %H:%M"),
                 alt.Tooltip("value:Q", title=t("col.value", lang), format=".2f")]))
    if anomalies is not None and len(anomalies):
        layers.append(alt.Chart(anomalies).mark_point(filled=True, size=60).encode(
            x=alt.X("time:T", scale=x_scale), y="value:Q",
            color=alt.Color("kind:N", title=None, scale=alt.Scale(
                domain=[t("chart.anomaly_fault", lang), t("chart.anomaly_event", lang)],
                range=[CATEGORY_COLORS["fault"], CATEGORY_COLORS["event"]])),
            tooltip=[alt.Tooltip("time:T", format="%Y-%m-%d %H:%M"),
                     alt.Tooltip("value:Q", format=".2f"), "kind:N", "component:N",
                     alt.Tooltip("score:Q", format=".2f")]))
    chart = alt.layer(*layers).properties(title=title, height=220)
    assert isinstance(chart, alt.LayerChart)  # properties() of a layer is a layer
    return chart


# --- site tables ---------------------------------------------------------------------
# Health readings shown beside each device (not among its sensors' values): what
# gateways report, and what the edge agent on the gateway reports about itself.
HEALTH_METRICS = {"battery_voltage": "col.battery", "signal_rssi": "col.signal",
                  "agent_queue_depth": "col.queue", "agent_queue_age": "col.queue_age",
                  "agent_dropped": "col.dropped"}
NOT_SENSORS = frozenset(HEALTH_METRICS) | frozenset(AGENT_METRICS)


_CATALOG_ORDER = {name: n for n, name in enumerate(METRICS)}


def sensor_items(latest: list[dict]) -> list[dict]:
    """The site's sensors in catalog order (weather, soil, water...), then by device."""
    items = [item for item in latest if item["metric"] not in NOT_SENSORS]
    return sorted(items, key=lambda i: (_CATALOG_ORDER.get(i["metric"], len(METRICS)),
                                        i["device_id"]))


def default_metrics(sensors: list[dict], alerts: list[dict], count: int = 4) -> list[str]:
    """What the history shows first: metrics under an active alert, then the rest in
    catalog order, ``count`` in all."""
    alerting = {a.get("series_id") for a in alerts if a.get("state") != "closed"}
    metrics = list(dict.fromkeys(i["metric"] for i in sensors))
    hot = [m for m in metrics if any(i["series_id"] in alerting for i in sensors
                                     if i["metric"] == m)]
    return list(dict.fromkeys(hot + metrics))[:count]


def latest_table(latest: list[dict], sparks: dict[int, list[float]], lang: Lang
                 ) -> pd.DataFrame:
    rows = [{t("col.device", lang): item["device_id"],
             t("col.metric", lang): metric_name(item["metric"], lang),
             t("col.value", lang): item["value"],
             t("col.unit", lang): item["unit"],
             t("col.time", lang): local(item["time"]),
             t("col.trend", lang): sparks.get(item["series_id"], [])}
            for item in sensor_items(latest)]
    return pd.DataFrame(rows, columns=[t(k, lang) for k in (
        "col.device", "col.metric", "col.value", "col.unit", "col.time", "col.trend")])


def device_health(devices: list[dict], latest: list[dict], lang: Lang) -> pd.DataFrame:
    health = {(i["device_id"], i["metric"]): i["value"] for i in latest
              if i["metric"] in HEALTH_METRICS}
    rows = []
    for device in devices:
        status = device["status"]
        row = {t("col.device", lang): device["id"], t("col.model", lang): device["model"],
               t("col.state", lang): label("device", status["state"], lang),
               t("col.last_seen", lang): local(status.get("last_seen")),
               t("col.missing", lang): status.get("missing_batches", 0)}
        for metric, key in HEALTH_METRICS.items():
            row[t(key, lang)] = health.get((device["id"], metric))
        rows.append(row)
    return pd.DataFrame(rows)


# --- configuration and commands (docs/control.md) ----------------------------------
def config_table(control: dict, lang: Lang) -> pd.DataFrame:
    """One row per device that was configured or reported: versions, sync, differences."""
    rows = []
    for twin in control["devices"]:
        if twin["desired_version"] is None and twin["reported_version"] is None:
            continue
        difference = ", ".join(f"{name}: {d['reported']} → {d['desired']}"
                               for name, d in twin["difference"].items())
        rows.append({t("col.device", lang): twin["device_id"],
                     t("col.desired", lang): twin["desired_version"],
                     t("col.reported", lang): twin["reported_version"],
                     t("col.in_sync", lang): twin["in_sync"],
                     t("col.difference", lang): twin["reported_error"] or difference,
                     t("col.agent", lang): twin.get("agent_version")})
    return pd.DataFrame(rows)


def actuator_states(commands: list[dict]) -> dict[tuple[str, str], float]:
    """(device, actuator) -> its state (1 on, 0 off) by the newest finished set or read
    command: what the platform last knew, not a live reading."""
    states: dict[tuple[str, str], float] = {}
    for command in sorted(commands, key=lambda c: c["issued_at"]):
        actuator = command["params"].get("actuator")
        if (command["state"] == "done" and actuator and command["action"] in ("set", "read")
                and command["value"] is not None):
            states[command["device_id"], actuator] = command["value"]
    return states


_PARAMS = ("actuator", "state", "value", "duration_s", "version", "url", "sha256")


def _param_order(name: str) -> tuple[int, str]:
    return (_PARAMS.index(name) if name in _PARAMS else len(_PARAMS), name)


def commands_table(commands: list[dict], lang: Lang) -> pd.DataFrame:
    rows = [{t("col.time", lang): local(c["issued_at"]),
             t("col.device", lang): c["device_id"],
             t("col.command", lang): " ".join([c["action"], *(
                 f"{k}={c['params'][k]}" for k in sorted(c["params"], key=_param_order)
                 if k != "signature")]),
             t("col.state", lang): label("command", c["state"], lang),
             t("col.reason", lang): c["reason"] or "",
             t("col.by", lang): c["issued_by"]} for c in commands]
    return pd.DataFrame(rows)


# --- alerts --------------------------------------------------------------------------
def alerts_table(alerts: list[dict], names: dict[str, str], lang: Lang) -> pd.DataFrame:
    rows = [{t("col.id", lang): a["id"], t("col.site", lang): names.get(a["site_id"],
                                                                          a["site_id"]),
             t("col.rule", lang): rule_name(a["rule"], lang),
             t("col.category", lang): label("category", a["category"], lang),
             t("col.severity", lang): label("severity", a["severity"], lang),
             t("col.state", lang): label("alert_state", a["state"], lang),
             t("col.message", lang): a["message"],
             t("col.opened", lang): local(a["opened_at"]),
             t("col.updated", lang): local(a["updated_at"]),
             t("col.value", lang): a.get("value"), t("col.peak", lang): a.get("peak_value")}
            for a in alerts]
    return pd.DataFrame(rows, columns=[t(k, lang) for k in (
        "col.id", "col.site", "col.rule", "col.category", "col.severity", "col.state",
        "col.message", "col.opened", "col.updated", "col.value", "col.peak")])


def history_table(history: list[dict], lang: Lang) -> pd.DataFrame:
    rows = [{t("col.time", lang): local(h["at"]),
             t("col.action", lang): label("action", h["action"], lang),
             t("col.actor", lang): h["actor"], t("col.note", lang): h.get("note"),
             t("col.value", lang): h.get("value")} for h in history]
    return pd.DataFrame(rows, columns=[t(k, lang) for k in (
        "col.time", "col.action", "col.actor", "col.note", "col.value")])


def alert_window(alert: dict, now: datetime) -> tuple[datetime, datetime]:
    """The series around an alert: from 6 h before it opened to 1 h after it closed (or
    now), so the operator sees what led to it and whether it cleared."""
    opened = pd.Timestamp(alert["opened_at"]).to_pydatetime()
    closed = alert.get("closed_at")
    end = min(pd.Timestamp(closed).to_pydatetime() + timedelta(hours=1), now) if closed else now
    return opened - timedelta(hours=6), max(end, opened + timedelta(minutes=1))


def deliveries_table(items: list[dict], lang: Lang) -> pd.DataFrame:
    """The delivery log of an alert: each attempt, its channel (no secrets: the API shows
    scheme and host only), outcome and latency."""
    rows = [{t("col.time", lang): local(d["at"]), t("col.kind", lang): d["kind"],
             t("col.contact", lang): d["contact"], t("col.channel", lang): d["channel"],
             t("col.outcome", lang): "✓" if d["ok"] else (d.get("error") or "✗"),
             t("col.latency", lang): round(d["latency_ms"])} for d in items]
    return pd.DataFrame(rows, columns=[t(k, lang) for k in (
        "col.time", "col.kind", "col.contact", "col.channel", "col.outcome", "col.latency")])


def incident_line(incident: dict, names: dict[str, str], lang: Lang) -> str:
    """One incident as a line: its rule, how many sites, which, how many still open."""
    sites = [names.get(a["site_id"], a["site_id"]) for a in incident["alerts"]]
    open_count = sum(a["state"] == "open" for a in incident["alerts"])
    shown = ", ".join(sites[:8]) + (" …" if len(sites) > 8 else "")
    return t("incidents.line", lang, rule=rule_name(incident["rule"], lang),
             sites=len(sites), open=open_count, names=shown)
