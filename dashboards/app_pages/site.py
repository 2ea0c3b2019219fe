"""Site: latest value of every sensor with a sparkline, history with anomalies, alerts
and maintenance windows marked, device health; devices' configuration, actuators, commands
(operators send them)."""

from __future__ import annotations

import streamlit as st

from tidefield.dashboards import data, ui, views
from tidefield.dashboards.client import ApiError, ApiRefused
from tidefield.dashboards.i18n import district_name, kind_name, label, metric_name, t

lang = ui.lang()
st.title(t("site.title", lang))

with ui.guard(lang):
    api = data.client()
    sites = data.sites(api)
by_id = {s["id"]: s for s in sites}
ids = list(by_id)
if (wanted := st.query_params.get("site")) in by_id:  # a link to a site
    ui.remember("site", wanted)
site_id = ui.choice(st.selectbox, t("site.choose", lang), ids, name="site", language=lang,
                    format_func=lambda i: f"{by_id[i][f'name_{lang}']} ({i})")
st.query_params["site"] = site_id
site = by_id[site_id]
st.header(site[f"name_{lang}"], divider="gray")
st.caption(f"{kind_name(site['kind'], lang)} · {district_name(site['district'], lang)} · "
           f"{site['lat']:.4f}, {site['lon']:.4f}")

range_key = ui.choice(st.radio, t("site.range", lang), list(views.RANGES), name="range",
                      language=lang, default="24h", horizontal=True,
                      format_func=lambda r: t(f"range.{r}", lang))


@ui.auto_refresh
def body() -> None:
    end = data.now_minute()
    start = end - views.RANGES[range_key]
    with ui.guard(lang):
        latest = data.site_latest(api, site_id)
        devices = data.devices(api, site_id)
        sensors = views.sensor_items(latest)
        sparks = data.sparklines(api, tuple(i["series_id"] for i in sensors), end)
        active = data.alerts(api, site=site_id, state="active")
        recent = data.alerts(api, site=site_id, since=start)
        anomalies = data.anomalies(api, start, end, site=site_id)
        windows = data.maintenance(api, start, end, site_id)

    st.subheader(t("site.latest", lang))
    st.dataframe(views.latest_table(latest, sparks, lang), hide_index=True, width="stretch",
                 column_config={t("col.trend", lang): st.column_config.LineChartColumn(
                     t("col.trend", lang), width="medium"),
                     t("col.time", lang): st.column_config.DatetimeColumn(
                         format="YYYY-MM-DD HH:mm")})

    alerts = list({a["id"]: a for a in active + recent}.values())
    st.subheader(t("site.alerts", lang))
    if alerts:
        names = {site_id: site[f"name_{lang}"]}
        st.dataframe(views.alerts_table(alerts, names, lang), hide_index=True,
                     width="stretch")
    else:
        st.caption(t("site.none", lang))

    st.subheader(t("site.history", lang))
    bucket = views.choose_bucket(end - start)
    st.caption(t("site.bucket", lang, bucket=t(f"bucket.{bucket}", lang)))
    metrics = list(dict.fromkeys(i["metric"] for i in sensors))
    chosen = ui.choices(t("site.metrics", lang), metrics, name=f"metrics:{site_id}",
                        language=lang, default=views.default_metrics(sensors, alerts),
                        format_func=lambda m: metric_name(m, lang),
                        placeholder=t("app.choose", lang))
    marks = views.anomalies_frame(anomalies, lang)
    columns = st.columns(2)
    charts = [i for i in sensors if i["metric"] in chosen]
    for n, item in enumerate(charts):
        with ui.guard(lang):
            answer = data.readings(api, item["series_id"], start, end, bucket)
        frame = views.readings_frame(answer)
        title = f"{metric_name(item['metric'], lang)} · {item['device_id']}"
        with columns[n % 2]:
            if frame.empty:
                st.info(f"{title}: {t('site.no_data', lang)}")
                continue
            own = [a for a in alerts if a.get("series_id") == item["series_id"]]
            st.altair_chart(views.series_chart(
                frame, title=title, unit=item["unit"], lang=lang,
                anomalies=marks[marks["series_id"] == item["series_id"]], alerts=own,
                window=(start, end),
                maintenance=[w for w in windows if w["device_id"] in (None, item["device_id"])]),
                width="stretch")

    st.subheader(t("site.devices", lang))
    health = views.device_health(devices, latest, lang)
    st.dataframe(health, hide_index=True, width="stretch", column_config={
        t("col.last_seen", lang): st.column_config.DatetimeColumn(
            format="YYYY-MM-DD HH:mm:ss")})
    states = [d["status"]["state"] for d in devices]
    st.caption(" · ".join(f"{label('device', s, lang)} {states.count(s)}"
                          for s in ("online", "offline", "unknown")))

    with ui.guard(lang):
        control = data.site_control(api, site_id)
    st.subheader(t("site.control", lang))
    st.caption(t("site.config", lang))
    table = views.config_table(control, lang)
    if table.empty:
        st.caption(t("site.none", lang))
    else:
        st.dataframe(table, hide_index=True, width="stretch")
    st.caption(t("site.actuators", lang))
    actuators = views.actuator_states(control["commands"])
    st.dataframe([{t("col.device", lang): device, t("col.actuator", lang): name,
                   t("col.state", lang): "on" if value else "off"}
                  for (device, name), value in sorted(actuators.items())] or
                 [{t("col.actuator", lang): t("site.none", lang)}], hide_index=True)
    st.caption(t("site.commands", lang))
    st.dataframe(views.commands_table(control["commands"], lang), hide_index=True,
                 width="stretch", column_config={t("col.time", lang):
                 st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")})


def controls() -> None:
    """Operators switch actuators here; the API refuses anyone else (403, shown)."""
    with st.expander(t("site.send", lang)):
        gateways = [d["id"] for d in data.devices(api, site_id)]
        device = st.selectbox(t("site.gateway", lang), gateways, key=f"cmd_dev:{site_id}")
        actuator = st.text_input(t("site.actuator", lang), value="aerator",
                                 key=f"cmd_act:{site_id}")
        minutes = st.number_input(t("site.minutes", lang), min_value=0, max_value=1440,
                                  value=10, key=f"cmd_min:{site_id}")
        on, off = st.columns(2)
        state = ("on" if on.button(t("site.on", lang), key="cmd_on", type="primary")
                 else "off" if off.button(t("site.off", lang), key="cmd_off") else None)
        if state is None:
            return
        body: dict[str, object] = {"action": "set", "actuator": actuator.strip(),
                                   "state": state}
        if state == "on" and minutes:
            body["duration_s"] = minutes * 60
        try:
            sent = api.command(device, body)
        except ApiRefused as exc:
            st.error(t("site.not_allowed", lang, detail=exc.message))
        except ApiError as exc:
            ui.banner(exc, lang)
        else:
            data.forget_control()
            st.success(t("site.sent", lang, id=sent["id"]))


body()
controls()
