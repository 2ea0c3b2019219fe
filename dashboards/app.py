"""Entry file of the dashboards: `streamlit run` this (or `tidefield dashboard`).

It sets up the page, the language switch and the navigation; each page lives in pages/
and reads only through the HTTP API (data.py), configured by TIDEFIELD_API_URL and
TIDEFIELD_API_KEY.
"""

from __future__ import annotations

import streamlit as st

from tidefield.dashboards import ui
from tidefield.dashboards.i18n import t

PAGES = (  # (file, message key of its title, url path, icon)
    ("pages/overview.py", "nav.overview", "overview", ":material/map:"),
    ("pages/site.py", "nav.site", "site", ":material/sensors:"),
    ("pages/alerts.py", "nav.alerts", "alerts", ":material/notifications:"),
    ("pages/labs.py", "nav.labs", "labs", ":material/download:"),
)

st.set_page_config(page_title="Tidefield", page_icon=":material/waves:", layout="wide")
lang = ui.language_switch()
st.sidebar.caption(t("app.title", lang))
navigation = st.navigation([
    st.Page(path, title=t(key, lang), url_path=url, icon=icon, default=(url == "overview"))
    for path, key, url, icon in PAGES])
navigation.run()
