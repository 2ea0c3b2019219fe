"""Labs: browse series, preview one over a range, download it as CSV or Parquet."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import streamlit as st

from tidefield.dashboards import data, ui, views
from tidefield.dashboards.i18n import label, metric_name, t
from tidefield.protocol.catalog import METRICS

PREVIEW_ROWS = 500
BUCKETS = ("raw", "5m", "1h", "1d")

lang = ui.lang()
st.title(t("labs.title", lang))

with ui.guard(lang):
    api = data.client()
    sites = data.sites(api)
names = {s["id"]: s[f"name_{lang}"] for s in sites}

# ?site= and ?series= open the page on a series (links from elsewhere, bookmarks)
if (wanted_site := st.query_params.pop("site", None)) in names:
    ui.remember("l_site", wanted_site)
if (wanted_series := st.query_params.pop("series", None)) and wanted_series.isdigit():
    ui.remember("l_series", int(wanted_series))
cells = st.columns(2)
with cells[0]:
    site_id = ui.choice(
        st.selectbox, t("col.site", lang), [None, *names], name="l_site", language=lang,
        format_func=lambda i: t("alerts.all", lang) if i is None else f"{names[i]} ({i})")
with cells[1]:
    metric = ui.choice(
        st.selectbox, t("col.metric", lang), [None, *METRICS], name="l_metric",
        language=lang,
        format_func=lambda m: t("alerts.all", lang) if m is None else metric_name(m, lang))

with ui.guard(lang):
    series = data.series(api, site=site_id, metric=metric)
st.caption(t("labs.count", lang, count=len(series)))
if not series:
    st.stop()

by_id = {s["id"]: s for s in series}
st.dataframe(pd.DataFrame([{
    t("col.series", lang): s["id"], t("col.site", lang): names.get(s["site_id"], s["site_id"]),
    t("col.device", lang): s["device_id"], t("col.metric", lang): metric_name(s["metric"], lang),
    t("col.unit", lang): s["unit"]} for s in series]), hide_index=True, width="stretch",
    height=240)

series_id = ui.choice(
    st.selectbox, t("labs.series", lang), list(by_id), name="l_series", language=lang,
    format_func=lambda i: f"{i} · {by_id[i]['device_id']} · "
                          f"{metric_name(by_id[i]['metric'], lang)}")
chosen = by_id[series_id]

zone = ZoneInfo(views.DISPLAY_TZ)
today = datetime.now(zone).date()
wide_cells = st.columns(3)
first: date = wide_cells[0].date_input(t("labs.start", lang), today - timedelta(days=6),
                                  key="l_start")
last: date = wide_cells[1].date_input(t("labs.end", lang), today, key="l_end")
if first > last:
    st.error(t("labs.bad_range", lang))
    st.stop()
# Whole days in Qingdao's time: [first 00:00, the day after last 00:00)
start = datetime.combine(first, time(), zone)
end = datetime.combine(last + timedelta(days=1), time(), zone)
default_bucket = views.choose_bucket(end - start)
with wide_cells[2]:
    bucket = ui.choice(st.radio, t("labs.bucket", lang), list(BUCKETS), name="l_bucket",
                       language=lang, default=default_bucket, horizontal=True,
                       format_func=lambda b: label("bucket", b, lang))

with ui.guard(lang):
    answer = data.readings(api, series_id, start, end, bucket)
frame = views.readings_frame(answer)

st.subheader(t("labs.preview", lang))
st.caption(t("labs.rows", lang, count=len(frame)))
if frame.empty:
    st.info(t("site.no_data", lang))
else:
    title = f"{metric_name(chosen['metric'], lang)} · {chosen['device_id']}"
    st.altair_chart(views.series_chart(frame, title=title, unit=chosen["unit"], lang=lang,
                                       window=(start, end)), width="stretch")
    st.dataframe(frame.head(PREVIEW_ROWS), hide_index=True, width="stretch", height=240)


def export(fmt: str) -> Callable[[], bytes]:
    # called only when the button is clicked: a long range is not fetched for nothing
    return lambda: api.export(series=[series_id], start=start, end=end, fmt=fmt)


stem = f"{chosen['device_id']}_{chosen['metric']}_{first:%Y%m%d}-{last:%Y%m%d}"
cells = st.columns(2)
cells[0].download_button(t("labs.download_csv", lang), export("csv"), f"{stem}.csv",
                         mime="text/csv", key="dl_csv", on_click="ignore")
cells[1].download_button(t("labs.download_parquet", lang), export("parquet"),
                         f"{stem}.parquet", mime="application/vnd.apache.parquet",
                         key="dl_parquet", on_click="ignore")
