"""Device health, sorted by what needs a visit (the API's order: silent devices, open
faults, low batteries, weak signal, lost batches, wrong clocks), and maintenance: a
technician puts a site or a device in maintenance before lifting a sonde, so its alerts
are held and its readings flagged."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

from tidefield.dashboards import data, ui, views
from tidefield.dashboards.client import ApiError
from tidefield.dashboards.i18n import label, t

FLASH_KEY = "health_flash"

lang = ui.lang()
st.title(t("health.title", lang))

with ui.guard(lang):
    api = data.client()
    sites = data.sites(api)
by_id = {s["id"]: s for s in sites}

if flash := st.session_state.pop(FLASH_KEY, None):
    st.success(flash)

site_filter = ui.choice(st.selectbox, t("maint.site", lang), [None, *by_id], name="h_site",
                        language=lang,
                        format_func=lambda i: t("alerts.all", lang) if i is None
                        else f"{by_id[i][f'name_{lang}']} ({i})")
with ui.guard(lang):
    rows = data.health(api, site_filter)
if rows:
    st.dataframe(pd.DataFrame([{
        t("health.score", lang): r["visit_score"], "ID": r["device_id"],
        t("col.site", lang): r["site_id"],
        t("col.state", lang): label("device", r["state"], lang),
        t("health.reasons", lang): "; ".join(r["reasons"]),
        t("col.last_seen", lang): pd.Timestamp(r["last_seen"]) if r["last_seen"] else None,
        t("col.battery", lang): r["battery_v"], t("col.signal", lang): r["signal_dbm"],
        t("health.gaps", lang): r["missing_batches"],
        t("health.clock", lang): r["clock_offset_s"],
        t("health.faults", lang): r["open_faults"], t("health.login", lang): r["login"],
        t("health.agent", lang): r.get("agent_version"),
        t("health.config", lang): r.get("config"),
        t("maint.title", lang): "✓" if r["in_maintenance"] else ""} for r in rows]),
        hide_index=True, width="stretch", column_config={
            t("col.last_seen", lang): st.column_config.DatetimeColumn(
                format="YYYY-MM-DD HH:mm")})
else:
    st.info(t("health.none", lang))

st.subheader(t("maint.title", lang))
if by_id:
    cells = list(st.columns(4))
    site_id = cells[0].selectbox(t("maint.site", lang), list(by_id), key="maint_site",
                                 format_func=lambda i: f"{by_id[i][f'name_{lang}']} ({i})")
    with ui.guard(lang):
        devices = [d["id"] for d in data.devices(api, site_id) if not d.get("retired")]
    device = cells[1].selectbox(t("maint.device", lang), [None, *devices], key="maint_device",
                                format_func=lambda d: t("maint.whole_site", lang)
                                if d is None else d)
    hours = cells[2].number_input(t("maint.hours", lang), min_value=0.25, max_value=72.0,
                                  value=2.0, step=0.25, key="maint_hours")
    reason = cells[3].text_input(t("maint.reason", lang), key="maint_reason")
    if st.button(t("maint.start", lang), key="maint_start", type="primary"):
        ends = data.now_minute() + timedelta(minutes=1) + timedelta(hours=float(hours))
        try:
            window = api.start_maintenance(site_id, ends, device_id=device,
                                           reason=reason.strip())
        except ApiError as exc:
            ui.banner(exc, lang)
        else:
            data.forget_fleet()
            st.session_state[FLASH_KEY] = t(
                "maint.started", lang, time=f"{views.local(window['ends_at']):%Y-%m-%d %H:%M}")
            st.rerun()

end = data.now_minute() + timedelta(days=31)
with ui.guard(lang):
    windows = data.maintenance(api, end - timedelta(days=38), end, site_filter)
if windows:
    st.markdown(f"**{t('maint.windows', lang)}**")
    st.dataframe(pd.DataFrame([{
        "#": w["id"], t("col.site", lang): w["site_id"],
        t("maint.device", lang): w["device_id"] or t("maint.whole_site", lang),
        "from": views.local(w["starts_at"]), "to": views.local(w["ends_at"]),
        t("maint.reason", lang): w["reason"], t("col.actor", lang): w["created_by"],
        "active": w["active"]} for w in windows]), hide_index=True, width="stretch")
    active = [w["id"] for w in windows if w["active"]]
    if active:
        cells = list(st.columns(2))
        chosen = cells[0].selectbox("#", active, key="maint_pick")
        if cells[1].button(t("maint.end", lang), key="maint_end"):
            try:
                api.end_maintenance(chosen)
            except ApiError as exc:
                ui.banner(exc, lang)
            else:
                data.forget_fleet()
                st.session_state[FLASH_KEY] = t("maint.ended", lang)
                st.rerun()
else:
    st.caption(t("maint.none", lang))
