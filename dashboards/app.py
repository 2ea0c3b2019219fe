"""Entry file of the dashboards: `streamlit run` this (or `tidefield dashboard`).

It sets up the page, the language switch and the navigation; each page lives in
app_pages/ and reads only through the HTTP API (data.py), configured by TIDEFIELD_API_URL
and TIDEFIELD_API_KEY. (Not "pages/": Streamlit would also serve a folder of that name as
an old-style multipage app, pages without this entry file and its language switch.)
"""

from __future__ import annotations

import streamlit as st

from tidefield.dashboards import ui
from tidefield.dashboards.i18n import t

PAGES = (  # (file, message key of its title, url path, icon)
    ("app_pages/overview.py", "nav.overview", "overview", ":material/map:"),
    ("app_pages/site.py", "nav.site", "site", ":material/sensors:"),
    ("app_pages/alerts.py", "nav.alerts", "alerts", ":material/notifications:"),
    ("app_pages/labs.py", "nav.labs", "labs", ":material/download:"),
)

st.set_page_config(page_title="Tidefield", page_icon=":material/waves:", layout="wide")
lang = ui.language_switch()
st.sidebar.caption(t("app.title", lang))
navigation = st.navigation([
    st.Page(path, title=t(key, lang), url_path=url, icon=icon, default=(url == "overview"))
    for path, key, url, icon in PAGES])
navigation.run()
