"""Entry file of the dashboards: `streamlit run` this (or `tidefield dashboard`).

It sets up the page, the language switch and the navigation; each page lives in
app_pages/ and reads only through the HTTP API (data.py) at TIDEFIELD_API_URL, as the
person signed in (account.py): until someone is, every URL shows the sign-in form, and
after a first sign-in (or a reset) the new-password form; then the page asked for.
The admin pages (sites and devices; people and the audit log) are listed for people who
administer an organisation. (Not "pages/":
Streamlit would also serve a folder of that name as an old-style multipage app, pages
without this entry file and its language switch.)
"""

from __future__ import annotations

import streamlit as st

from tidefield.dashboards import account, ui
from tidefield.dashboards.i18n import t

PAGES = (  # (file, message key of its title, url path, icon)
    ("app_pages/overview.py", "nav.overview", "overview", ":material/map:"),
    ("app_pages/site.py", "nav.site", "site", ":material/sensors:"),
    ("app_pages/alerts.py", "nav.alerts", "alerts", ":material/notifications:"),
    ("app_pages/health.py", "nav.health", "health", ":material/build:"),
    ("app_pages/labs.py", "nav.labs", "labs", ":material/download:"),
)
ADMIN_PAGES = (
    ("app_pages/fleet.py", "nav.fleet", "fleet", ":material/router:"),
    ("app_pages/admin.py", "nav.admin", "admin", ":material/admin_panel_settings:"),
)

st.set_page_config(page_title="Tidefield", page_icon=":material/waves:", layout="wide")
lang = ui.lang()
with ui.guard(lang):
    me = account.current_person()
admin = bool(me and (me["platform_admin"] or me["administers"]))
navigation = st.navigation(
    [st.Page(path, title=t(key, lang), url_path=url, icon=icon, default=(url == "overview"))
     for path, key, url, icon in PAGES + (ADMIN_PAGES if admin else ())],
    position="sidebar" if me and not me["must_change_password"] else "hidden")
lang = ui.language_switch()
st.sidebar.caption(t("app.title", lang))
if me is None:
    account.sign_in_page(lang)
elif me["must_change_password"]:
    account.password_page(lang, me)
else:
    account.sidebar(lang, me)
    navigation.run()
