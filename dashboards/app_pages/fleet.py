"""Sites and devices, for the admins of an organisation: create, edit, retire sites; add,
move and retire devices; hand out a device's broker login once (with its agent config
file) and revoke it; the registry file out and in. The API decides what each admin may
change (their organisations' sites) and says why when it refuses."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from tidefield.dashboards import data, ui
from tidefield.dashboards.client import ApiError
from tidefield.dashboards.i18n import district_name, kind_name, t
from tidefield.protocol.catalog import DEVICE_TEMPLATES, SITE_KINDS
from tidefield.protocol.registry import DISTRICTS

FLASH_KEY = "fleet_flash"

lang = ui.lang()
st.title(t("fleet.title", lang))

with ui.guard(lang):
    api = data.client()
    sites = data.sites(api)
by_id = {s["id"]: s for s in sites}


def done(message: str) -> None:
    data.forget_fleet()
    st.session_state[FLASH_KEY] = message
    st.rerun()


if flash := st.session_state.pop(FLASH_KEY, None):
    st.success(flash)

# a keyed choice, not st.tabs: a button's rerun stays in its section (a login shown once
# must not land in a tab nobody is looking at)
SECTIONS = {"sites": "fleet.sites", "devices": "fleet.devices", "registry": "fleet.registry"}
section = st.radio(t("fleet.title", lang), list(SECTIONS), key="fleet_section",
                   horizontal=True, label_visibility="collapsed",
                   format_func=lambda k: t(SECTIONS[k], lang))

if section == "sites":
    st.subheader(t("fleet.new_site", lang))
    cells = list(st.columns(3))
    new_id = cells[0].text_input(t("fleet.id", lang), key="fleet_new_id").strip()
    name_zh = cells[1].text_input(t("fleet.name_zh", lang), key="fleet_new_name_zh")
    name_en = cells[2].text_input(t("fleet.name_en", lang), key="fleet_new_name_en")
    cells = list(st.columns(4))
    kind = cells[0].selectbox(t("fleet.kind", lang), list(SITE_KINDS), key="fleet_new_kind",
                              format_func=lambda k: kind_name(k, lang))
    district = cells[1].selectbox(t("fleet.district", lang), list(DISTRICTS),
                                  key="fleet_new_district",
                                  format_func=lambda d: district_name(d, lang))
    lat = cells[2].number_input(t("fleet.lat", lang), value=36.07, format="%.5f",
                                key="fleet_new_lat")
    lon = cells[3].number_input(t("fleet.lon", lang), value=120.38, format="%.5f",
                                key="fleet_new_lon")
    if st.button(t("fleet.create_site", lang), key="fleet_create_site", type="primary"):
        try:
            made = api.create_site({
                "id": new_id, "name_zh": name_zh, "name_en": name_en, "kind": kind,
                "domain": SITE_KINDS[kind].domain.value, "district": district,
                "lat": lat, "lon": lon})
        except ApiError as exc:
            ui.banner(exc, lang)
        else:
            done(t("fleet.site_created", lang, id=made["id"], devices=len(made["devices"])))

    if by_id:
        st.divider()
        site_id = st.selectbox(t("fleet.pick_site", lang), list(by_id), key="fleet_site",
                               format_func=lambda i: f"{by_id[i][f'name_{lang}']} ({i})")
        site = by_id[site_id]
        cells = list(st.columns(4))
        edited = {
            "name_zh": cells[0].text_input(t("fleet.name_zh", lang), site["name_zh"],
                                           key=f"fleet_edit_zh_{site_id}"),
            "name_en": cells[1].text_input(t("fleet.name_en", lang), site["name_en"],
                                           key=f"fleet_edit_en_{site_id}"),
            "lat": cells[2].number_input(t("fleet.lat", lang), value=float(site["lat"]),
                                         format="%.5f", key=f"fleet_edit_lat_{site_id}"),
            "lon": cells[3].number_input(t("fleet.lon", lang), value=float(site["lon"]),
                                         format="%.5f", key=f"fleet_edit_lon_{site_id}")}
        changes = {k: v for k, v in edited.items() if v != site[k]}
        cells = list(st.columns(2))
        if cells[0].button(t("fleet.save_site", lang), key="fleet_save_site",
                           disabled=not changes):
            try:
                api.edit_site(site_id, changes)
            except ApiError as exc:
                ui.banner(exc, lang)
            else:
                done(t("fleet.saved", lang))
        if cells[1].button(t("fleet.retire_site", lang), key="fleet_retire_site"):
            try:
                api.retire_site(site_id)
            except ApiError as exc:
                ui.banner(exc, lang)
            else:
                done(t("fleet.retired", lang, id=site_id))

elif section == "devices":
    if not by_id:
        st.info(t("health.none", lang))
    else:
        site_id = st.selectbox(t("fleet.pick_site", lang), list(by_id), key="fleet_dev_site",
                               format_func=lambda i: f"{by_id[i][f'name_{lang}']} ({i})")
        site = by_id[site_id]
        with ui.guard(lang):
            devices = data.devices(api, site_id)
        st.dataframe(pd.DataFrame([{
            "ID": d["id"], t("fleet.template", lang): d["template"], "model": d["model"],
            "interval (s)": d["interval_s"], t("fleet.retired_col", lang): d.get("retired", False)}
            for d in devices]), hide_index=True, width="stretch")

        cells = list(st.columns(3))
        templates = [tpl.name for tpl in DEVICE_TEMPLATES[site["kind"]]]
        template = cells[0].selectbox(t("fleet.template", lang), templates, key="fleet_template")
        device_id = cells[1].text_input(t("fleet.device_id", lang), key="fleet_new_device").strip()
        if cells[2].button(t("fleet.add_device", lang), key="fleet_add_device"):
            try:
                added = api.create_device(site_id, template, device_id or None)
            except ApiError as exc:
                ui.banner(exc, lang)
            else:
                done(t("fleet.device_added", lang, id=added["id"]))

        in_service = [d["id"] for d in devices if not d.get("retired")]
        if in_service:
            st.divider()
            picked = st.selectbox(t("fleet.pick_device", lang), in_service, key="fleet_device")
            cells = list(st.columns(2))
            others = [i for i in by_id if i != site_id and by_id[i]["kind"] == site["kind"]] or \
                [i for i in by_id if i != site_id]
            target = cells[0].selectbox(t("fleet.move_to", lang), others, key="fleet_move_to",
                                        format_func=lambda i: f"{by_id[i][f'name_{lang}']} ({i})")
            if cells[1].button(t("fleet.move", lang), key="fleet_move"):
                try:
                    api.move_device(picked, target)
                except ApiError as exc:
                    ui.banner(exc, lang)
                else:
                    done(t("fleet.moved", lang, id=picked, site=target))
            cells = list(st.columns(4))
            rotate = cells[0].checkbox(t("fleet.rotate", lang), key="fleet_rotate")
            secret = None  # the login just made: shown in this run only, kept nowhere
            if cells[1].button(t("fleet.provision", lang), key="fleet_provision", type="primary"):
                try:
                    secret = api.provision(picked, rotate=rotate)
                except ApiError as exc:
                    ui.banner(exc, lang)
            if cells[2].button(t("fleet.revoke", lang), key="fleet_revoke"):
                try:
                    api.revoke_login(picked)
                except ApiError as exc:
                    ui.banner(exc, lang)
                else:
                    done(t("fleet.revoked", lang, id=picked))
            if cells[3].button(t("fleet.retire_device", lang), key="fleet_retire_device"):
                try:
                    api.retire_device(picked)
                except ApiError as exc:
                    ui.banner(exc, lang)
                else:
                    done(t("fleet.retired", lang, id=picked))
            if secret is not None:
                st.warning(t("fleet.once", lang, user=secret["username"]))
                st.code(secret["agent_config"], language="yaml")
                st.download_button(t("fleet.download_config", lang), secret["agent_config"],
                                   file_name="edge.yaml", mime="application/yaml",
                                   key="fleet_config_download", on_click="ignore")
                if secret.get("ca_pem"):
                    st.download_button(t("fleet.download_ca", lang), secret["ca_pem"],
                                       file_name="broker-ca.pem", key="fleet_ca_download",
                                       on_click="ignore")

else:
    st.download_button(t("fleet.download_registry", lang), key="fleet_registry_download",
                       data=api.registry_csv, file_name="sites.csv", mime="text/csv",
                       on_click="ignore")
    upload = st.file_uploader(t("fleet.upload", lang), type=["csv"], key="fleet_upload")
    if upload is not None and st.button(t("fleet.import", lang), key="fleet_import"):
        try:
            result = api.import_registry(upload.getvalue())
        except ApiError as exc:
            ui.banner(exc, lang)
        else:
            done(t("fleet.imported", lang, created=len(result["created"]),
                   updated=len(result["updated"])))
