"""People and the audit log, for the admins of an organisation (the API decides what
each admin may see and do: their organisations' people and rows)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from tidefield.dashboards import data, ui
from tidefield.dashboards.client import ApiError
from tidefield.dashboards.i18n import label, t

ROLES = (None, "viewer", "operator", "admin")
FLASH_KEY = "admin_flash"

lang = ui.lang()
st.title(t("admin.title", lang))

with ui.guard(lang):
    api = data.client()
    people = data.users(api)
    organisations = {o["id"]: o for o in data.organisations(api)}
    me = data.me(api)

if flash := st.session_state.pop(FLASH_KEY, None):
    st.success(flash)

people_tab, audit_tab = st.tabs([t("admin.people", lang), t("admin.audit", lang)])

with people_tab:
    slug = {i: o["slug"] for i, o in organisations.items()}
    st.dataframe(pd.DataFrame([{
        t("auth.username", lang): p["username"], "name": p["display_name"],
        "roles": ", ".join(f"{slug.get(int(o), o)}: {label('role', r, lang)}"
                           for o, r in sorted(p["roles"].items())),
        "2FA": "✓" if p["totp_enabled"] else "",
        "state": "disabled" if p["disabled"] else (
            "must change password" if p["must_change_password"] else "active")}
        for p in people]), hide_index=True, width="stretch")
    by_id = {p["id"]: p for p in people}
    if by_id:
        picked = st.selectbox(t("admin.pick_user", lang), list(by_id), key="admin_user",
                              format_func=lambda i: by_id[i]["username"])
        person = by_id[picked]
        administered = sorted(me["administers"]) if not me["platform_admin"] \
            else sorted(organisations)
        cells = st.columns(3)
        with cells[0]:
            org = st.selectbox(t("admin.organisation", lang),
                               administered, key="admin_org",
                               format_func=lambda i: slug.get(i, str(i)))
        current = person["roles"].get(str(org))
        with cells[1]:
            role = st.selectbox(t("admin.role", lang, org=slug.get(org, org)), list(ROLES),
                                index=ROLES.index(current), key=f"admin_role_{picked}_{org}",
                                format_func=lambda r: label("role", r or "none", lang))
        with cells[2]:
            if st.button(t("admin.set_role", lang), key="admin_set_role") and role != current:
                try:
                    api.set_role(picked, org, role)
                except ApiError as exc:
                    ui.banner(exc, lang)
                else:
                    data.forget_people()
                    st.session_state[FLASH_KEY] = t("admin.role_done", lang)
                    st.rerun()
        if st.button(t("admin.reset", lang), key="admin_reset"):
            try:
                answer = api.reset_password(picked)
            except ApiError as exc:
                ui.banner(exc, lang)
            else:
                data.forget_people()
                st.warning(t("admin.reset_done", lang, user=person["username"],
                             password=answer["temporary_password"]))

with audit_tab:
    filter_cells = st.columns(2)
    action = filter_cells[0].text_input(t("admin.filter_action", lang), key="audit_action").strip()
    actor = filter_cells[1].text_input(t("admin.filter_actor", lang), key="audit_actor").strip()
    filters = {"action": action or None, "actor": actor or None}
    with ui.guard(lang):
        rows = data.audit(api, **filters)
    if not rows:
        st.info(t("admin.no_rows", lang))
    else:
        st.dataframe(pd.DataFrame([{
            "at": pd.Timestamp(r["at"]), "actor": r["actor"], "action": r["action"],
            "target": r["target"], "from": r["source_address"] or "",
            "before": "" if r["before"] is None else str(r["before"]),
            "after": "" if r["after"] is None else str(r["after"])} for r in rows]),
            hide_index=True, width="stretch",
            column_config={"at": st.column_config.DatetimeColumn(
                format="YYYY-MM-DD HH:mm:ss")})
    st.download_button(t("admin.download", lang), key="audit_csv",
                       data=lambda: api.audit_csv(**filters), file_name="tidefield-audit.csv",
                       mime="text/csv", on_click="ignore")
