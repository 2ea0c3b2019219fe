"""Overview: every site on a map coloured by state, fleet counts, filters, drill-in."""

from __future__ import annotations

import streamlit as st

from tidefield.dashboards import data, ui, views
from tidefield.dashboards.i18n import district_name, kind_name, label, t
from tidefield.protocol.catalog import SITE_KINDS
from tidefield.protocol.registry import DISTRICTS

lang = ui.lang()
st.title(t("overview.title", lang))


def open_site(site_id: str) -> None:
    st.switch_page("app_pages/site.py", query_params={"site": site_id})


@ui.auto_refresh
def body() -> None:
    with ui.guard(lang):
        api = data.client()
        sites = data.sites(api)
        overview = data.overview(api)
    frame = views.site_frame(sites, overview, lang)

    by_severity = overview.get("open_alerts_by_severity", {})
    cells = st.columns(5)
    cells[0].metric(t("overview.sites", lang), len(frame))
    cells[1].metric(t("overview.devices_online", lang), overview.get("devices_online", 0))
    cells[2].metric(t("overview.devices_offline", lang), overview.get("devices_offline", 0))
    cells[3].metric(t("overview.open_alerts", lang), views.open_alert_total(overview),
                    help=" · ".join(f"{label('severity', s, lang)} {by_severity.get(s, 0)}"
                                    for s in views.SEVERITIES))
    cells[4].metric(t("overview.readings_per_second", lang),
                    f"{overview.get('readings_per_second', 0.0):,.1f}")
    st.caption(" · ".join(f"{label('severity', s, lang)}: {by_severity.get(s, 0)}"
                          for s in views.SEVERITIES))

    filters = st.columns(3)
    placeholder = t("app.choose", lang)
    with filters[0]:
        kinds = ui.choices(t("overview.filter_kind", lang), list(SITE_KINDS), name="f_kind",
                           language=lang, format_func=lambda k: kind_name(k, lang),
                           placeholder=placeholder)
    with filters[1]:
        districts = ui.choices(t("overview.filter_district", lang), list(DISTRICTS),
                               name="f_district", language=lang, placeholder=placeholder,
                               format_func=lambda d: district_name(d, lang))
    with filters[2]:
        states = ui.choices(t("overview.filter_state", lang), list(views.STATES),
                            name="f_state", language=lang, placeholder=placeholder,
                            format_func=lambda s: label("state", s, lang))
    shown = views.filter_sites(frame, kinds=kinds, districts=districts, states=states)

    map_col, side_col = st.columns([3, 1])
    with map_col:
        deck = views.site_map(shown, data.geojson(), lang,
                              tiles=data.settings().dashboard_map_tiles)
        event = st.pydeck_chart(deck, height=640, on_select="rerun",
                                selection_mode="single-object", key="site_map",
                                alt=t("overview.map_alt", lang, count=len(shown)))
    with side_col:
        st.markdown(f"**{t('overview.legend', lang)}**")
        for state, rgb in views.STATE_COLORS.items():
            count = int((shown["state"] == state).sum())
            st.markdown(f"<span style='color:rgb{rgb}'>●</span> "
                        f"{label('state', state, lang)}: {count}", unsafe_allow_html=True)
        ids = shown["id"].tolist()
        names = dict(zip(shown["id"], shown["name"], strict=True))
        clicked = views.picked_site(event)
        if clicked is not None and clicked in names:  # a click on the map
            st.markdown(f"**{names[clicked]}** ({clicked})")
            if st.button(t("overview.open_site", lang), key="open_clicked", type="primary"):
                open_site(clicked)
        if ids:
            pick = ui.choice(st.selectbox, t("overview.pick_site", lang), ids,
                             name="pick_site", language=lang,
                             format_func=lambda i: f"{names[i]} ({i})")
            if st.button(t("overview.open_site", lang), key="open_site"):
                open_site(pick)

    st.subheader(t("overview.table", lang))
    table = shown.sort_values(["open_alerts", "id"], ascending=[False, True])[
        ["id", "name", "kind_label", "district_label", "state_label", "open_alerts",
         "devices_online", "devices_offline"]]
    table.columns = [t("col.id", lang), t("col.name", lang), t("col.kind", lang),
                     t("col.district", lang), t("col.state", lang),
                     t("col.open_alerts", lang), t("overview.devices_online", lang),
                     t("overview.devices_offline", lang)]
    st.dataframe(table, hide_index=True, width="stretch", height=360)


body()
