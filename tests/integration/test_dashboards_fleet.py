"""The fleet pages under Streamlit's AppTest against the real API and database: the admin
page of sites and devices (create, add, move, hand out a login, retire), device health
with maintenance, the maintenance shading on the site's charts, and feedback on alerts."""

from __future__ import annotations

import json
from datetime import timedelta

import psycopg
import pytest
import yaml

from tests.support.dashboards import ApiServer, seed_fleet
from tests.support.people import add_person, session_token

from . import test_dashboards
from .test_dashboards import frame_of, open_page

configure = test_dashboards.configure  # the fixture: the dashboards pointed at an API


@pytest.fixture
def seeded(db_url):
    fleet = seed_fleet(db_url, hours=4)
    with psycopg.connect(db_url) as conn:
        add_person(conn, "chief", {1: "admin"})
        add_person(conn, "tech", {1: "operator"})
    with ApiServer(db_url) as api:
        yield {"url": db_url, "fleet": fleet, "api": api}


def test_an_admin_runs_sites_and_devices_from_the_fleet_page(seeded, configure):
    api = seeded["api"]
    configure(api.url, session_token(api.url, "chief"), dashboard_language="en")
    at = open_page("app_pages/fleet.py")
    assert at.title[0].value == "Sites and devices"
    at.text_input(key="fleet_new_id").input("gh-777")
    at.text_input(key="fleet_new_name_zh").input("新温室")
    at.text_input(key="fleet_new_name_en").input("New greenhouse")
    at.selectbox(key="fleet_new_kind").set_value("greenhouse")
    at.selectbox(key="fleet_new_district").set_value("jimo")
    at.number_input(key="fleet_new_lat").set_value(36.39)
    at.number_input(key="fleet_new_lon").set_value(120.45).run()
    at.button(key="fleet_create_site").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.success[0].value == "Site gh-777 created with 4 devices"

    # a bad one: the API's reason on the page, no stack trace
    at.text_input(key="fleet_new_id").input("gh-777").run()
    at.button(key="fleet_create_site").click().run()
    assert not at.exception and "exists already" in at.error[0].value

    at.radio(key="fleet_section").set_value("devices").run()
    at.selectbox(key="fleet_dev_site").set_value("gh-777").run()
    assert set(frame_of(at, 0)["ID"]) == {"gh-777-climate", "gh-777-gw", "gh-777-soil",
                                          "gh-777-soilph"}
    at.selectbox(key="fleet_template").set_value("soil")
    at.text_input(key="fleet_new_device").input("gh-777-soil2").run()
    at.button(key="fleet_add_device").click().run()
    assert at.success[0].value == "Device gh-777-soil2 added"

    at.selectbox(key="fleet_dev_site").set_value("gh-777").run()
    at.selectbox(key="fleet_device").set_value("gh-777-gw").run()
    at.button(key="fleet_provision").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "shown this once" in at.warning[0].value
    config = yaml.safe_load(at.code[0].value)
    assert config["site"] == "gh-777" and config["broker"]["username"] == "gh-777-gw"
    assert "Download agent config edge.yaml" in [b.label for b in at.get("download_button")]
    with psycopg.connect(seeded["url"]) as conn:
        assert conn.execute("SELECT count(*) FROM mqtt_credentials WHERE username = "
                            "'gh-777-gw' AND revoked_at IS NULL").fetchone()[0] == 1
    at.run()  # the next run: the password is gone from the page
    assert not at.code

    at.selectbox(key="fleet_device").set_value("gh-777-soil2").run()
    target = at.selectbox(key="fleet_move_to").value  # another greenhouse of the office
    assert target.startswith("ag-")
    at.button(key="fleet_move").click().run()
    assert at.success[0].value == f"gh-777-soil2 moved to {target}"
    at.selectbox(key="fleet_dev_site").set_value("gh-777").run()
    at.selectbox(key="fleet_device").set_value("gh-777-soilph").run()
    at.button(key="fleet_retire_device").click().run()
    assert at.success[0].value == "gh-777-soilph retired"
    with psycopg.connect(seeded["url"]) as conn:
        assert conn.execute("SELECT site_id FROM devices WHERE id = 'gh-777-soil2'"
                            ).fetchone()[0] == target
        assert conn.execute("SELECT retired_at IS NOT NULL FROM devices "
                            "WHERE id = 'gh-777-soilph'").fetchone()[0]
        actions = [r[0] for r in conn.execute(
            "SELECT action FROM audit_log WHERE actor = 'chief' AND action NOT LIKE "
            "'sign_in%' ORDER BY id")]
    assert actions == ["site.created", "device.created", "device.provisioned",
                       "device.moved", "device.retired"]


def test_the_fleet_page_is_not_offered_to_an_operator(seeded, configure):
    api = seeded["api"]
    configure(api.url, session_token(api.url, "tech"), dashboard_language="en")
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        open_page("app_pages/fleet.py")


def test_a_technician_puts_a_site_in_maintenance_and_its_charts_show_it(seeded, configure):
    api, fleet = seeded["api"], seeded["fleet"]
    configure(api.url, session_token(api.url, "tech"), dashboard_language="en")
    at = open_page("app_pages/health.py")
    assert at.title[0].value == "Device health, by what needs a visit"
    table = frame_of(at, 0)
    scores = list(table["Visit score"])
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert "offline" in table.iloc[0]["Why"]  # the seeded farm's probe sent its last will
    at.selectbox(key="maint_site").set_value(fleet.ocean.id).run()
    at.number_input(key="maint_hours").set_value(3.0)
    at.text_input(key="maint_reason").input("sonde cleaning").run()
    at.button(key="maint_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.success[0].value.startswith("Maintenance until")
    with psycopg.connect(seeded["url"]) as conn:
        row = conn.execute("SELECT site_id, device_id, reason, ends_at - starts_at, "
                           "created_by FROM maintenance_windows").fetchone()
    assert row[0] == fleet.ocean.id and row[1] is None and row[2] == "sonde cleaning"
    assert timedelta(hours=2.9) < row[3] < timedelta(hours=3.1) and row[4] == "tech"

    site = open_page("app_pages/site.py", site=fleet.ocean.id)
    charts = site.get("vega_lite_chart")
    assert charts, "the site page draws its charts"
    for chart in charts:  # a site-wide window: on every chart, under the rest
        first = json.loads(chart.proto.spec)["layer"][0]
        assert first["mark"] == {"type": "rect", "color": "#7a7a7a", "opacity": 0.25}

    at = open_page("app_pages/health.py")
    at.button(key="maint_end").click().run()
    assert at.success[0].value == "Maintenance ended"
    with psycopg.connect(seeded["url"]) as conn:
        assert conn.execute("SELECT ends_at <= now() FROM maintenance_windows").fetchone()[0]


def test_feedback_on_an_alert_is_saved_and_reported(seeded, configure):
    api, fleet = seeded["api"], seeded["fleet"]
    alert_id = fleet.alert_ids["hypoxia"]
    configure(api.url, session_token(api.url, "tech"), dashboard_language="en")
    at = open_page("app_pages/alerts.py", alert=str(alert_id))
    at.selectbox(key=f"verdict_{alert_id}").set_value("false_alarm")
    at.text_input(key=f"verdict_note_{alert_id}").input("sonde out of the water").run()
    at.button(key="feedback_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.success[0].value == f"Verdict on alert {alert_id} saved"
    given = [f for f in at.dataframe if "Verdict" in f.value.columns]
    assert given and list(given[0].value["Verdict"]) == ["false alarm"]
    report = [f.value for f in at.dataframe if "precision" in f.value.columns]
    assert report and report[0]["false alarm"].sum() == 1 and report[0]["precision"].iloc[0] == 0
    assert "Download verdicts (CSV)" in [b.label for b in at.get("download_button")]
    with psycopg.connect(seeded["url"]) as conn:
        assert conn.execute("SELECT verdict, note, actor FROM alert_feedback").fetchall() == [
            ("false_alarm", "sonde out of the water", "tech")]
