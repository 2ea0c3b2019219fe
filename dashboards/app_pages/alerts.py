"""Alerts: incidents first (acknowledged as a whole), then filter, look at one (its
history, who was told and the series around it), acknowledge, run a suggested response,
say what it was (feedback), and the platform's precision week by week."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pandas as pd
import streamlit as st

from tidefield.dashboards import data, ui, views
from tidefield.dashboards.client import ApiError, ApiRefused
from tidefield.dashboards.i18n import label, metric_name, rule_name, t

# Choices of each filter; None means "all". `active` (open or acknowledged) is the
# default view of an operator on shift.
CATEGORIES = (None, "fault", "event", "forecast")
SEVERITIES = (None, *views.SEVERITIES)
STATES = ("active", "open", "acknowledged", "closed", None)
VERDICTS = ("real", "false_alarm", "sensor_fault_fixed")
REPORT_WEEKS = 12
FLASH_KEY = "alerts_flash"

lang = ui.lang()
st.title(t("alerts.title", lang))

with ui.guard(lang):
    api = data.client()
    sites = data.sites(api)
names = {s["id"]: s[f"name_{lang}"] for s in sites}


def choice(prefix: str) -> Callable[[Any], str]:
    return lambda v: t("alerts.all", lang) if v is None else label(prefix, v, lang)


with ui.guard(lang):
    incidents = data.incidents(api)
if incidents:
    st.subheader(t("incidents.title", lang))
    for incident in incidents:
        line, act = st.columns([5, 1])
        line.markdown(views.incident_line(incident, names, lang))
        if any(a["state"] == "open" for a in incident["alerts"]) and act.button(
                t("incidents.acknowledge", lang), key=f"incident_{incident['id']}"):
            try:
                done = api.acknowledge_incident(incident["id"], "")
            except ApiRefused as exc:
                st.error(t("alerts.not_allowed", lang, detail=exc.message))
            except ApiError as exc:
                ui.banner(exc, lang)
            else:
                data.forget_alerts()
                st.session_state[FLASH_KEY] = t(
                    "incidents.acknowledged", lang, id=incident["id"],
                    count=sum(a["state"] == "acknowledged" for a in done["alerts"]))
                st.rerun()

cells = list(st.columns(4))
with cells[0]:
    site_filter = ui.choice(
        st.selectbox, t("alerts.filter_site", lang), [None, *names], name="a_site",
        language=lang,
        format_func=lambda i: t("alerts.all", lang) if i is None else f"{names[i]} ({i})")
with cells[1]:
    category = ui.choice(st.selectbox, t("alerts.filter_category", lang), list(CATEGORIES),
                         name="a_category", language=lang, format_func=choice("category"))
with cells[2]:
    severity = ui.choice(st.selectbox, t("alerts.filter_severity", lang), list(SEVERITIES),
                         name="a_severity", language=lang, format_func=choice("severity"))
with cells[3]:
    state = ui.choice(st.selectbox, t("alerts.filter_state", lang), list(STATES),
                      name="a_state", language=lang, default="active",
                      format_func=choice("alert_state"))

with ui.guard(lang):
    items = data.alerts(api, site=site_filter, category=category, severity=severity,
                        state=state)

if flash := st.session_state.pop(FLASH_KEY, None):
    st.success(flash)

if not items:
    st.info(t("alerts.none", lang))
    st.stop()

st.caption(t("alerts.count", lang, count=len(items)))
st.dataframe(views.alerts_table(items, names, lang), hide_index=True, width="stretch",
             height=min(420, 38 + 35 * len(items)), column_config={
                 t(k, lang): st.column_config.DatetimeColumn(format="MM-DD HH:mm")
                 for k in ("col.opened", "col.updated")})

by_id = {a["id"]: a for a in items}
ids = list(by_id)
wanted = st.query_params.get("alert")
if wanted and wanted.isdigit() and int(wanted) in by_id:  # a link to an alert
    ui.remember("a_pick", int(wanted))
alert_id = ui.choice(
    st.selectbox, t("alerts.pick", lang), ids, name="a_pick", language=lang,
    format_func=lambda i: (f"#{i} · {names.get(by_id[i]['site_id'], by_id[i]['site_id'])} · "
                           f"{rule_name(by_id[i]['rule'], lang)} · "
                           f"{label('severity', by_id[i]['severity'], lang)}"))
st.query_params["alert"] = str(alert_id)

with ui.guard(lang):
    alert = data.alert(api, alert_id)

st.subheader(f"#{alert['id']} {rule_name(alert['rule'], lang)} · "
             f"{names.get(alert['site_id'], alert['site_id'])}")
st.markdown(f"**{label('severity', alert['severity'], lang)}** · "
            f"{label('category', alert['category'], lang)} · "
            f"{label('alert_state', alert['state'], lang)} — {alert['message']}")

if alert["state"] == "open":
    comment = st.text_area(t("alerts.comment", lang), key=f"ack_comment_{alert_id}")
    if st.button(t("alerts.acknowledge", lang), key="ack", type="primary"):
        if not comment.strip():
            st.warning(t("alerts.need_comment", lang))
        else:
            try:
                api.acknowledge(alert_id, comment.strip())
            except ApiRefused as exc:
                st.error(t("alerts.not_allowed", lang, detail=exc.message))
            except ApiError as exc:
                if exc.status == 409:  # someone else acted on it meanwhile: show it now
                    data.forget_alerts()
                ui.banner(exc, lang)
            else:
                data.forget_alerts()
                st.session_state[FLASH_KEY] = t("alerts.acknowledged", lang, id=alert_id)
                st.rerun()
elif alert["state"] == "acknowledged":
    st.info(t("alerts.already", lang, who=alert.get("acknowledged_by") or "?",
              time=f"{views.local(alert['acknowledged_at']):%Y-%m-%d %H:%M}"
              if alert.get("acknowledged_at") else "?"))
    if alert.get("acknowledged_via"):
        st.caption(t("alerts.via", lang, via=alert["acknowledged_via"]))
else:
    st.info(t("alerts.closed", lang, time=f"{views.local(alert['closed_at']):%Y-%m-%d %H:%M}"))

# the rule's suggested responses: run one here (the API issues its command, once)
with ui.guard(lang):
    suggested = data.alert_responses(api, alert_id)
    may_run = data.may_operate(data.me(api))
if suggested:
    st.markdown(f"**{t('alerts.responses', lang)}**")
for response in suggested:
    state = t(f"response_state.{response['state']}", lang,
              who=response.get("confirmed_by") or "?",
              command=response.get("superseded_by") or "?")
    st.markdown(t("alerts.response", lang, actuator=response["actuator"],
                  minutes=response["duration_s"] / 60, device=response["device_id"],
                  state=state))
    if response["state"] != "suggested" or alert["state"] == "closed" or not may_run:
        continue
    if st.button(t("alerts.run", lang), key=f"run_{response['id']}", type="primary"):
        try:
            done = api.confirm_response(alert_id, response["id"])
        except ApiRefused as exc:
            st.error(t("alerts.run_not_allowed", lang, detail=exc.message))
        except ApiError as exc:
            if exc.status == 409:  # the alert closed or the aerator ran meanwhile: show it
                data.forget_alerts()
            ui.banner(exc, lang)
        else:
            data.forget_alerts()
            st.session_state[FLASH_KEY] = t("alerts.ran", lang, command=done["command_id"])
            st.rerun()

st.markdown(f"**{t('alerts.history', lang)}**")
st.dataframe(views.history_table(alert.get("history", []), lang), hide_index=True,
             width="stretch", column_config={t("col.time", lang): st.column_config.DatetimeColumn(
                 format="YYYY-MM-DD HH:mm:ss")})

st.markdown(f"**{t('alerts.deliveries', lang)}**")
with ui.guard(lang):
    sent = data.deliveries(api, alert_id)
if sent:
    st.dataframe(views.deliveries_table(sent, lang), hide_index=True, width="stretch",
                 column_config={t("col.time", lang): st.column_config.DatetimeColumn(
                     format="YYYY-MM-DD HH:mm:ss")})
else:
    st.caption(t("alerts.no_deliveries", lang))

if alert.get("series_id") is not None:
    st.markdown(f"**{t('alerts.around', lang)}**")
    start, end = views.alert_window(alert, data.now_minute())
    bucket = views.choose_bucket(end - start)
    with ui.guard(lang):
        series = data.readings(api, alert["series_id"], start, end, bucket)
        marks = data.anomalies(api, start, end, series=alert["series_id"])
    frame = views.readings_frame(series)
    if frame.empty:
        st.caption(t("site.no_data", lang))
    else:
        st.altair_chart(views.series_chart(
            frame, title=metric_name(series["metric"], lang), unit=series["unit"], lang=lang,
            anomalies=views.anomalies_frame(marks, lang), alerts=[alert],
            window=(start, end)), width="stretch")

st.markdown(f"**{t('feedback.title', lang)}**")
with ui.guard(lang):
    given = data.alert_feedback(api, alert_id)
if given:
    st.dataframe(pd.DataFrame([{
        t("col.time", lang): views.local(f["at"]),
        t("feedback.verdict", lang): label("verdict", f["verdict"], lang),
        t("feedback.note", lang): f["note"], t("col.actor", lang): f["actor"]}
        for f in given]), hide_index=True, width="stretch")
cells = list(st.columns([1, 2, 1]))
verdict = cells[0].selectbox(t("feedback.verdict", lang), list(VERDICTS),
                             key=f"verdict_{alert_id}",
                             format_func=lambda v: label("verdict", v, lang))
note = cells[1].text_input(t("feedback.note", lang), key=f"verdict_note_{alert_id}")
if cells[2].button(t("feedback.save", lang), key="feedback_save"):
    try:
        api.give_feedback(alert_id, verdict, note.strip())
    except ApiRefused as exc:
        st.error(t("alerts.not_allowed", lang, detail=exc.message))
    except ApiError as exc:
        ui.banner(exc, lang)
    else:
        data.forget_fleet()
        st.session_state[FLASH_KEY] = t("feedback.saved", lang, id=alert_id)
        st.rerun()

with st.expander(t("feedback.precision", lang)):
    report_end = data.now_minute()
    report_start = report_end - timedelta(weeks=REPORT_WEEKS)
    with ui.guard(lang):
        weeks = data.weekly_precision(api, report_start, report_end)
    judged = [w for w in weeks if w["judged"]]
    if judged:
        st.dataframe(pd.DataFrame([{
            "week": views.local(w["week"]), "rule": rule_name(w["rule"], lang),
            "component": w["component"], "alerts": w["alerts"], "judged": w["judged"],
            label("verdict", "real", lang): w["real"],
            label("verdict", "false_alarm", lang): w["false_alarm"],
            label("verdict", "sensor_fault_fixed", lang): w["sensor_fault_fixed"],
            "precision": w["precision"]} for w in judged]), hide_index=True,
            width="stretch", column_config={
                "week": st.column_config.DatetimeColumn(format="YYYY-MM-DD"),
                "precision": st.column_config.NumberColumn(format="%.2f")})
    else:
        st.caption(t("feedback.no_report", lang))
    st.download_button(t("feedback.download", lang), key="feedback_csv",
                       data=lambda: api.feedback_csv(start=report_start, end=report_end),
                       file_name="tidefield-feedback.csv", mime="text/csv",
                       on_click="ignore")
