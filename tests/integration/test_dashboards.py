"""Every dashboard page under Streamlit's AppTest, against the real API over a real,
seeded database, signed in as a person (the session token in the app's session state, as
the sign-in form leaves it; the form itself is tested at the end)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from streamlit.testing.v1 import AppTest

import tidefield.dashboards
from tests.support.dashboards import ApiServer, seed_fleet
from tests.support.people import PASSWORD, add_person, session_token, two_companies
from tidefield.dashboards import data
from tidefield.protocol.registry import load_sites
from tidefield.server.embedded import free_port

APP = Path(tidefield.dashboards.__file__).parent / "app.py"
TIMEOUT = 60  # the first run imports pandas, altair, pydeck


@pytest.fixture(scope="module")
def world(pg_cluster, template_db):
    """One seeded database and API for the module; tests that change data say so."""
    name = "dashboards_module"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    url = pg_cluster.url(name)
    fleet = seed_fleet(url)
    with psycopg.connect(url) as conn:
        # the platform office's operator: sees every site
        add_person(conn, "duty-officer", {1: "operator"})
    with ApiServer(url) as api:
        yield {"url": url, "fleet": fleet, "key": session_token(api.url, "duty-officer"),
               "api": api}
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


SIGNED_IN: dict[str, str | None] = {"token": None}  # what open_page's session holds


@pytest.fixture
def configure(monkeypatch):
    """Point the dashboards at an API (the environment is their configuration), signed in
    with ``token`` (a person's session; None: nobody signed in)."""

    def apply(api_url: str, token: str | None, **extra: str) -> None:
        monkeypatch.setenv("TIDEFIELD_API_URL", api_url)
        SIGNED_IN["token"] = token
        for name, value in extra.items():
            monkeypatch.setenv(f"TIDEFIELD_{name.upper()}", value)
        data.clear_all()

    yield apply
    SIGNED_IN["token"] = None
    data.clear_all()


def open_page(page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update(query)
    if SIGNED_IN["token"]:
        at.session_state[data.TOKEN_KEY] = SIGNED_IN["token"]
    at.run()
    if page:
        at.switch_page(page)
        at.query_params.update(query)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def chart_title(chart) -> str:
    return json.loads(chart.proto.spec)["title"]


def marks(chart) -> list[str]:
    """The chart's layers, bottom up: rect (alert spans), area (bucket min-max),
    line (readings), point (anomalies)."""
    return [layer["mark"]["type"] for layer in json.loads(chart.proto.spec)["layer"]]


def frame_of(at: AppTest, index: int = 0) -> pd.DataFrame:
    return at.dataframe[index].value


# --- overview ----------------------------------------------------------------------
def deck_sites(at: AppTest) -> list[dict]:
    spec = json.loads(at.get("deck_gl_json_chart")[0].proto.json)
    return next(layer["data"] for layer in spec["layers"] if layer["id"] == "sites")


def metric_value(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_overview_shows_every_site_and_the_alert_count(world, configure):
    configure(world["api"].url, world["key"], dashboard_language="en")
    fleet = world["fleet"]
    at = open_page()
    assert at.title[0].value == "Site overview"
    assert metric_value(at, "Sites") == "250"
    with psycopg.connect(world["url"]) as conn:
        active = conn.execute("SELECT count(*) FROM alerts WHERE state <> 'closed'"
                              ).fetchone()[0]
        online = conn.execute("SELECT count(DISTINCT device_id) FROM readings r "
                              "JOIN series s ON s.id = r.series_id").fetchone()[0] - 1
    assert active == 3 and metric_value(at, "Open alerts") == str(active)
    assert metric_value(at, "Devices online") == str(online)  # less the one that left
    plotted = deck_sites(at)
    assert len(plotted) == 250 and len({p["id"] for p in plotted}) == 250
    table = frame_of(at).set_index("ID")
    assert len(table) == 250
    assert table.loc[fleet.ocean.id, "State"] == "Alerting"
    assert table.loc[fleet.ocean.id, "Alerts"] == 2
    assert table.loc[fleet.farm.id, "State"] == "OK"  # its frost alert is closed
    assert table.loc[fleet.quiet.id, "State"] == "Offline"  # nothing reports there
    colours = {p["id"]: p["color"][:3] for p in plotted}
    assert colours[fleet.ocean.id] == [220, 40, 40] and colours[fleet.farm.id] == [34, 160, 80]


def test_overview_filters_by_kind_and_district(world, configure):
    configure(world["api"].url, world["key"], dashboard_language="en")
    at = open_page()
    at.multiselect(key="f_kind.en").set_value(["cage_farm"]).run()
    cages = {s.id for s in load_sites() if s.kind == "cage_farm"}
    assert {p["id"] for p in deck_sites(at)} == cages
    assert set(frame_of(at)["ID"]) == cages
    at.multiselect(key="f_kind.en").set_value([]).run()
    at.multiselect(key="f_district.en").set_value(["pingdu"]).run()
    pingdu = {s.id for s in load_sites() if s.district == "pingdu"}
    assert {p["id"] for p in deck_sites(at)} == pingdu


def test_overview_drills_into_the_picked_site(world, configure):
    configure(world["api"].url, world["key"], dashboard_language="en")
    ocean = world["fleet"].ocean
    at = open_page()
    at.selectbox(key="pick_site.en").set_value(ocean.id).run()
    at.button(key="open_site").click().run()
    assert not at.exception
    assert at.title[0].value == "Site details"
    assert at.selectbox(key="site.en").value == ocean.id


@pytest.mark.parametrize(("seconds", "note"), [("5", "Refreshes every 5 s"),
                                               ("0", "Auto-refresh is off")])
def test_auto_refresh_follows_its_setting(world, configure, seconds, note):
    configure(world["api"].url, world["key"], dashboard_language="en",
              dashboard_refresh_s=seconds)
    for page in (None, "app_pages/site.py"):
        at = open_page(page, site=world["fleet"].ocean.id)
        assert any(c.value.endswith(note) for c in at.caption)


def test_language_switch_changes_titles_and_site_names(world, configure):
    configure(world["api"].url, world["key"], dashboard_language="zh")
    ocean = world["fleet"].ocean
    at = open_page()
    assert at.title[0].value == "站点总览"
    names = frame_of(at).set_index("编号")["名称"]
    assert names[ocean.id] == ocean.name_zh
    at.selectbox(key="pick_site.zh").set_value(ocean.id).run()
    assert ocean.name_zh in at.selectbox(key="pick_site.zh").format_func(ocean.id)
    at.radio(key="language_switch").set_value("en").run()
    assert at.selectbox(key="pick_site.en").value == ocean.id  # the choice carries over
    assert at.title[0].value == "Site overview"
    names = frame_of(at).set_index("ID")["Name"]
    assert names[ocean.id] == ocean.name_en
    assert {n for n in names} == {s.name_en for s in load_sites()}
    # the choice holds on the next page
    at.switch_page("app_pages/site.py").run()
    assert at.title[0].value == "Site details"
    assert ocean.name_en in at.selectbox(key="site.en").format_func(ocean.id)
    assert "Latest values" in [s.value for s in at.subheader]


# --- site --------------------------------------------------------------------------
def hours_with_readings(fleet, interval_s: int, start: datetime, end: datetime) -> int:
    """How many hourly buckets of [start, end) hold a reading of a device seeded at
    `interval_s` (seed_fleet: one reading every interval, up to the minute before now)."""
    now_ms = int(fleet.now.timestamp() * 1000) // 60_000 * 60_000
    times = range(now_ms - 36 * 3_600_000, now_ms, interval_s * 1000)
    hours = {t // 3_600_000 * 3_600_000 for t in times}
    return sum(start.timestamp() * 1000 <= h < end.timestamp() * 1000 for h in hours)


def test_site_page_shows_latest_values_charts_and_device_health(world, configure,
                                                                monkeypatch):
    configure(world["api"].url, world["key"], dashboard_language="en")
    ocean = world["fleet"].ocean
    # the page's clock pinned to the minute after seeding: what an hourly sparkline holds
    # then depends only on where the seeded readings fall (a device reporting every
    # 5 minutes has nothing yet in the current hour at minute 3)
    page_end = world["fleet"].now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    monkeypatch.setattr(data, "now_minute", lambda: page_end)
    at = open_page("app_pages/site.py", site=ocean.id)
    assert at.title[0].value == "Site details"
    assert at.selectbox(key="site.en").value == ocean.id
    latest = frame_of(at, 0)
    sensors = [m for d in ocean.devices for m in d.template.metrics
               if m not in ("battery_voltage", "signal_rssi")]
    assert "tide_level" in sensors or "dissolved_oxygen" in sensors
    assert len(latest) == len(sensors)
    assert latest["Value"].notna().all()
    # 36 hours of readings: the sparkline has a mean for each of the last 24 hours that
    # holds a reading of the device
    interval = {d.id: d.template.interval_s for d in ocean.devices}
    expected = latest["Device"].map(lambda device: hours_with_readings(
        world["fleet"], interval[device], page_end - timedelta(hours=24), page_end))
    assert expected.between(23, 24).all()
    assert (latest["Last 24 h"].map(len) == expected).all()
    # charted by default: the two metrics under an alert, then catalog order
    shown = {"water_temperature", "dissolved_oxygen", "salinity", "water_ph"}
    assert set(at.multiselect(key=f"metrics:{ocean.id}.en").value) == shown
    charts = {chart_title(c): c for c in at.get("vega_lite_chart")}
    assert len(charts) == sum(m in shown for m in sensors) == 6  # two sondes
    # the hypoxia alert shaded and its anomalies marked on the oxygen line of the sonde
    # (24 hours come in 5-minute buckets, drawn as mean with a min-max band)
    assert marks(charts[f"dissolved oxygen · {ocean.id}-sonde"]) == [
        "rect", "area", "line", "point"]
    assert marks(charts[f"dissolved oxygen · {ocean.id}-sonde2"]) == ["area", "line"]
    health = frame_of(at, 2)
    assert set(health["Device"]) == {d.id for d in ocean.devices}
    assert (health["State"] == "online").all()
    gateway = health.set_index("Device").loc[f"{ocean.id}-gw"]
    assert 11 <= gateway["Battery (V)"] <= 14.5
    assert 0 <= gateway["Queue depth"] <= 1000  # reported by the edge agent


def test_site_page_shows_an_offline_device(world, configure):
    configure(world["api"].url, world["key"], dashboard_language="en")
    farm = world["fleet"].farm
    at = open_page("app_pages/site.py", site=farm.id)
    health = frame_of(at, 2).set_index("Device")
    assert health.loc[f"{farm.id}-soil", "State"] == "offline"
    assert health.loc[f"{farm.id}-climate", "State"] == "online"


def test_site_page_range_switch_uses_rollups(world, configure):
    configure(world["api"].url, world["key"], dashboard_language="en")
    at = open_page("app_pages/site.py", site=world["fleet"].ocean.id)
    at.radio(key="range.en").set_value("7d").run()
    assert not at.exception
    assert any("1 hour" in c.value for c in at.caption)


# --- alerts ------------------------------------------------------------------------
def test_alerts_page_filters_and_shows_history_and_the_series_around(world, configure):
    configure(world["api"].url, world["key"], dashboard_language="en")
    ids = world["fleet"].alert_ids
    at = open_page("app_pages/alerts.py")
    listed = frame_of(at)
    assert set(listed["ID"]) == {ids["hypoxia"], ids["stuck"], ids["storm"]}  # active
    at.selectbox(key="a_severity.en").set_value("critical").run()
    assert list(frame_of(at)["ID"]) == [ids["hypoxia"]]
    at.selectbox(key="a_severity.en").set_value(None).run()
    at.selectbox(key="a_state.en").set_value("closed").run()
    assert list(frame_of(at)["ID"]) == [ids["frost"]]
    assert "Closed at" in at.info[0].value
    at.selectbox(key="a_state.en").set_value("active").run()
    at.selectbox(key="a_pick.en").set_value(ids["stuck"]).run()
    assert "Acknowledged by night-shift" in at.info[0].value
    history = frame_of(at, 1)
    assert list(history["Action"]) == ["opened", "acknowledged"]
    assert history["Note"].iloc[1] == "diver checking"
    (chart,) = at.get("vega_lite_chart")
    assert marks(chart)[0] == "rect" and marks(chart)[-1] == "point"  # alert, anomalies


def test_acknowledging_in_the_alerts_page_changes_the_database(db_url, configure):
    fleet = seed_fleet(db_url, hours=8)
    alert_id = fleet.alert_ids["hypoxia"]
    with psycopg.connect(db_url) as conn:
        add_person(conn, "duty-officer", {1: "operator"})
    with ApiServer(db_url) as api:
        configure(api.url, session_token(api.url, "duty-officer"), dashboard_language="en")
        at = open_page("app_pages/alerts.py", alert=str(alert_id))
        assert at.selectbox(key="a_pick.en").value == alert_id
        at.button(key="ack").click().run()  # no comment yet: refused by the page
        assert at.warning[0].value == "Please write a comment"
        at.text_area(key=f"ack_comment_{alert_id}").input("aerators on, diver sent").run()
        at.button(key="ack").click().run()
        assert not at.exception
        assert at.success[0].value == f"Alert {alert_id} acknowledged"
        assert "Acknowledged by duty-officer" in at.info[0].value
        assert list(frame_of(at, 1)["Action"]) == ["opened", "acknowledged"]
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT state, acknowledged_by, ack_comment FROM alerts "
                           "WHERE id = %s", (alert_id,)).fetchone()
    assert row == ("acknowledged", "duty-officer", "aerators on, diver sent")
    with psycopg.connect(db_url) as conn:  # and the audit log knows who, from the dashboard
        audited = conn.execute("SELECT actor, target FROM audit_log "
                               "WHERE action = 'alert.acknowledged'").fetchall()
    assert audited == [("duty-officer", f"alert:{alert_id}")]


def test_a_viewer_cannot_acknowledge(db_url, configure):
    fleet = seed_fleet(db_url, hours=2)
    alert_id = fleet.alert_ids["hypoxia"]
    with psycopg.connect(db_url) as conn:
        add_person(conn, "watcher", {1: "viewer"})
    with ApiServer(db_url) as api:
        configure(api.url, session_token(api.url, "watcher"), dashboard_language="en")
        at = open_page("app_pages/alerts.py", alert=str(alert_id))
        at.text_area(key=f"ack_comment_{alert_id}").input("on it").run()
        at.button(key="ack").click().run()
        assert "Your roles do not allow acknowledging" in at.error[0].value
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT state FROM alerts WHERE id = %s",
                            (alert_id,)).fetchone()[0] == "open"


def test_a_suggested_response_is_run_from_the_alerts_page_by_an_operator(db_url, configure):
    """The button is offered to an operator, not to a viewer; clicking it has the API issue
    the response's command (the stored command id, once), shown as run by whom."""
    fleet = seed_fleet(db_url, hours=2)
    alert_id = fleet.alert_ids["hypoxia"]
    with psycopg.connect(db_url) as conn:
        add_person(conn, "duty-officer", {1: "operator"})
        add_person(conn, "watcher", {1: "viewer"})
        (site,) = conn.execute("SELECT site_id FROM alerts WHERE id = %s",
                               (alert_id,)).fetchone()
        (device,) = conn.execute("SELECT id FROM devices WHERE site_id = %s ORDER BY id "
                                 "LIMIT 1", (site,)).fetchone()
        (response_id,) = conn.execute(
            """INSERT INTO alert_responses (alert_id, site_id, device_id, actuator, duration_s,
                                            command_id, reason, suggested_at)
               VALUES (%s, %s, %s, 'aerator', 10800, 'resp-dashboard-0001', 'suggest mode',
                       now()) RETURNING id""", (alert_id, site, device)).fetchone()
    with ApiServer(db_url) as api:
        configure(api.url, session_token(api.url, "watcher"), dashboard_language="en")
        at = open_page("app_pages/alerts.py", alert=str(alert_id))
        shown = [m.value for m in at.markdown]
        assert f"aerator on for 180 min at {device}: suggested" in shown
        assert f"run_{response_id}" not in [b.key for b in at.button]
        configure(api.url, session_token(api.url, "duty-officer"), dashboard_language="en")
        at = open_page("app_pages/alerts.py", alert=str(alert_id))
        at.button(key=f"run_{response_id}").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.success[0].value == "Command resp-dashboard-0001 issued"
        assert f"aerator on for 180 min at {device}: run by duty-officer" in [
            m.value for m in at.markdown]
        assert f"run_{response_id}" not in [b.key for b in at.button]
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT id, device_id, params, issued_by FROM device_commands"
                            ).fetchall() == [("resp-dashboard-0001", device, {
                                "actuator": "aerator", "state": "on", "duration_s": 10800},
                                "duty-officer")]
        assert conn.execute("SELECT actor FROM audit_log WHERE action = "
                            "'alert.response_confirmed'").fetchall() == [("duty-officer",)]


# --- labs --------------------------------------------------------------------------
def test_labs_page_lists_previews_and_offers_downloads(world, configure):
    configure(world["api"].url, world["key"], dashboard_language="en")
    fleet = world["fleet"]
    at = open_page("app_pages/labs.py")
    at.selectbox(key="l_site.en").set_value(fleet.ocean.id).run()
    at.selectbox(key="l_metric.en").set_value("dissolved_oxygen").run()
    listed = frame_of(at, 0)
    wanted = {sid for (dev, metric), sid in fleet.series.items()
              if metric == "dissolved_oxygen" and dev.startswith(fleet.ocean.id)}
    assert set(listed["Series"]) == wanted and len(wanted) == 2  # sonde and sonde2
    at.radio(key="l_bucket.en").set_value("raw").run()
    assert not at.exception
    # raw readings of a 1-minute sonde over the last 7 days: all 36 h seeded
    points = int(next(c.value for c in at.caption if c.value.endswith(" points")).split()[0])
    assert 36 * 60 - 2 <= points <= 36 * 60
    preview = frame_of(at, 1)
    assert len(preview) == 500 and preview["time"].is_monotonic_increasing
    assert len(at.get("vega_lite_chart")) == 1
    assert [b.label for b in at.get("download_button")] == ["Download CSV",
                                                             "Download Parquet"]


# --- failures ----------------------------------------------------------------------
@pytest.mark.parametrize("page", [None, "app_pages/site.py", "app_pages/alerts.py",
                                  "app_pages/labs.py"])
def test_an_unreachable_api_shows_a_banner_not_a_stack_trace(configure, page):
    configure(f"http://127.0.0.1:{free_port()}", "tfs_abc_def", dashboard_language="en")
    at = open_page(page)
    assert not at.exception
    assert "cannot be reached" in at.error[0].value


def test_an_ended_session_returns_to_the_sign_in_form_saying_why(world, configure):
    configure(world["api"].url, "tfs_nope_nope", dashboard_language="en")
    at = open_page("app_pages/site.py", site=load_sites()[0].id)
    assert at.title[0].value == "Sign in"
    assert "session ended" in at.info[0].value and "sign in again" in at.info[0].value
    assert not at.dataframe  # nothing of any site


# --- signing in ------------------------------------------------------------------------
@pytest.mark.parametrize("page", [None, "app_pages/site.py", "app_pages/alerts.py",
                                  "app_pages/labs.py"])
def test_nobody_signed_in_sees_only_the_sign_in_form(world, configure, page):
    configure(world["api"].url, None, dashboard_language="en")
    at = open_page(page)
    assert [t.value for t in at.title] == ["Sign in"]
    assert not at.dataframe and not at.metric and not at.get("deck_gl_json_chart")


def test_signing_in_through_the_form_opens_the_page_asked_for(world, configure):
    configure(world["api"].url, None, dashboard_language="en")
    at = open_page("app_pages/alerts.py")
    at.text_input(key="sign_in_username").input("duty-officer")
    at.text_input(key="sign_in_password").input("not it")
    at.button[0].click().run()
    assert "Sign-in failed: wrong user name, password or one-time code" in at.error[0].value
    at.text_input(key="sign_in_password").input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception
    assert at.title[0].value == "Alerts"
    assert at.session_state[data.TOKEN_KEY].startswith("tfs_")
    assert "Signed in as Duty-Officer" in [c.value for c in at.sidebar.caption]
    at.sidebar.button(key="sign_out").click().run()
    assert at.title[0].value == "Sign in"
    assert data.TOKEN_KEY not in at.session_state


def test_a_first_sign_in_must_choose_a_new_password(world, configure):
    with psycopg.connect(world["url"]) as conn:
        add_person(conn, "rookie", {1: "viewer"}, password="temporary-pass",
                   must_change=True)
    configure(world["api"].url, session_token(world["api"].url, "rookie", "temporary-pass"),
              dashboard_language="en")
    at = open_page()
    assert at.title[0].value == "Choose a new password" and not at.metric
    at.text_input(key="pw_current").input("temporary-pass")
    at.text_input(key="pw_new").input("a phrase of my own choosing")
    at.text_input(key="pw_again").input("a phrase of my own choosing")
    at.button[0].click().run()
    assert not at.exception
    assert at.title[0].value == "Site overview"


def test_two_people_of_two_companies_each_see_their_own(pg_cluster, db_url, configure):
    fleet = seed_fleet(db_url, hours=2)
    with psycopg.connect(db_url) as conn:
        # the seeded fleet's farm (greenhouse) is A's, its ocean cage farm B's
        companies = two_companies(conn, a_kind="greenhouse", b_kind="cage_farm")
    assert fleet.farm.id in companies.a_sites and fleet.ocean.id in companies.b_hidden
    with ApiServer(db_url) as api:
        seen = {}
        for person, own in (("anna", [*companies.a_sites, companies.granted]),
                            ("bob", companies.b_sites)):
            configure(api.url, session_token(api.url, person), dashboard_language="en")
            at = open_page()
            plotted = {p["id"] for p in deck_sites(at)}
            assert plotted == set(own), person
            assert metric_value(at, "Sites") == str(len(own))
            alerts = open_page("app_pages/alerts.py")
            listed = set(frame_of(alerts)["Site"]) if alerts.dataframe else set()
            seen[person] = (plotted, listed)
        # anna's company reads the site of B it was granted, and no other of B's
        anna_alerts = seen["anna"][1]
        assert not any(fleet.ocean.name_en in s for s in anna_alerts)
        assert any(fleet.ocean.name_en in s for s in seen["bob"][1])
        # and a link to B's alert shows anna nothing of it
        configure(api.url, session_token(api.url, "anna"), dashboard_language="en")
        at = open_page("app_pages/alerts.py", alert=str(fleet.alert_ids["hypoxia"]))
        assert not any(fleet.ocean.name_en in (s.value or "") for s in at.subheader)


def test_the_admin_page_lists_people_and_the_audit_log(world, configure):
    with psycopg.connect(world["url"]) as conn:
        add_person(conn, "chief", {1: "admin"})
    configure(world["api"].url, session_token(world["api"].url, "chief"),
              dashboard_language="en")
    at = open_page("app_pages/admin.py")
    assert not at.exception
    assert at.title[0].value == "People and the audit log"
    people = frame_of(at, 0)
    assert {"chief", "duty-officer"} <= set(people["User name"])
    log = frame_of(at, 1)
    assert "sign_in.succeeded" in set(log["action"]) and "chief" in set(log["actor"])
    at.text_input(key="audit_action").input("sign_in.*").run()
    assert set(frame_of(at, 1)["action"]) <= {"sign_in.succeeded", "sign_in.failed",
                                              "sign_in.locked"}
    assert [b.label for b in at.get("download_button")] == ["Download CSV"]


def test_the_admin_page_is_not_offered_to_an_operator(world, configure):
    configure(world["api"].url, world["key"], dashboard_language="en")
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        open_page("app_pages/admin.py")  # not registered for this person


def test_incidents_come_first_and_are_acknowledged_as_a_whole(db_url, configure):
    fleet = seed_fleet(db_url, hours=8)
    alert_id = fleet.alert_ids["hypoxia"]
    with psycopg.connect(db_url) as conn:
        add_person(conn, "duty-officer", {1: "operator"})
        sites = [r[0] for r in conn.execute("SELECT id FROM sites WHERE kind = 'tea_garden' "
                                            "ORDER BY id LIMIT 3")] or \
            [r[0] for r in conn.execute("SELECT id FROM sites ORDER BY id LIMIT 3")]
        frost = [conn.execute(
            """INSERT INTO alerts (site_id, rule, category, severity, message, opened_at,
                                   updated_at) VALUES (%s, 'frost_risk', 'event', 'warning',
                                   'cold', now(), now()) RETURNING id""", (s,)).fetchone()[0]
            for s in sites]
        incident = conn.execute("INSERT INTO notify_incidents (organisation_id, rule, "
                                "opened_at, joined_at) VALUES (1, 'frost_risk', now(), now()) "
                                "RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO notify_incident_alerts SELECT unnest(%s::bigint[]), %s",
                     (frost, incident))
        # who was told of the hypoxia: one attempt that failed, one that went through
        contact = conn.execute("INSERT INTO notify_contacts (organisation_id, name, url) "
                               "VALUES (1, 'duty-phone', 'dingtalk://SECxyz@tok/') "
                               "RETURNING id").fetchone()[0]
        delivery = conn.execute("INSERT INTO notify_deliveries (key, contact_id, alert_id, "
                                "kind, status) VALUES ('k', %s, %s, 'opened', 'sent') "
                                "RETURNING id", (contact, alert_id)).fetchone()[0]
        conn.execute("INSERT INTO notify_attempts (delivery_id, ok, latency_ms, error) "
                     "VALUES (%s, false, 10000, 'timeout'), (%s, true, 85, NULL)",
                     (delivery, delivery))
    with ApiServer(db_url) as api:
        configure(api.url, session_token(api.url, "duty-officer"), dashboard_language="en")
        at = open_page("app_pages/alerts.py", alert=str(alert_id))
        assert not at.exception
        assert at.subheader[0].value.startswith("Incidents")
        assert "3 sites, 3 unacknowledged" in at.markdown[0].value
        told = frame_of(at, 2)
        assert list(told["Contact"]) == ["duty-phone", "duty-phone"]
        assert list(told["Outcome"]) == ["✓", "timeout"]
        assert "SECxyz" not in told.to_string() and set(told["Channel"]) == {"dingtalk://"}
        at.button(key=f"incident_{incident}").click().run()
        assert not at.exception
        assert at.success[0].value == f"Incident {incident}: 3 alerts acknowledged"
    with psycopg.connect(db_url) as conn:
        states = conn.execute("SELECT DISTINCT state, acknowledged_by FROM alerts "
                              "WHERE id = ANY(%s)", (frost,)).fetchall()
    assert states == [("acknowledged", "duty-officer")]


# --- configuration and control (docs/control.md) ------------------------------------------
def test_an_operator_switches_an_actuator_from_the_site_page(db_url, configure):
    fleet = seed_fleet(db_url, hours=2)
    site = fleet.ocean.id
    with psycopg.connect(db_url) as conn:
        add_person(conn, "pond-operator", {1: "operator"})
        add_person(conn, "onlooker", {1: "viewer"})
    with ApiServer(db_url) as api:
        configure(api.url, session_token(api.url, "onlooker"), dashboard_language="en")
        at = open_page("app_pages/site.py", site=site)
        at.selectbox(key=f"cmd_dev:{site}").set_value(f"{site}-gw").run()
        at.button(key="cmd_on").click().run()
        assert "Not allowed" in at.error[0].value  # a viewer: the API said 403
        configure(api.url, session_token(api.url, "pond-operator"), dashboard_language="en")
        at = open_page("app_pages/site.py", site=site)
        assert not at.exception
        at.selectbox(key=f"cmd_dev:{site}").set_value(f"{site}-gw").run()
        at.number_input(key=f"cmd_min:{site}").set_value(15).run()
        at.button(key="cmd_on").click().run()
        assert not at.exception
        assert at.success[0].value.startswith("Command cmd-")
        at.run()  # the history shows it (the cache was cleared)
        history = [f for f in (frame_of(at, i) for i in range(len(at.dataframe)))
                   if "Command" in f.columns]
        assert list(history[0]["Command"]) == [
            "set actuator=aerator state=on duration_s=900.0"]
        assert list(history[0]["By"]) == ["pond-operator"]
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT device_id, action, params, state, issued_by "
                            "FROM device_commands").fetchall()
        audited = conn.execute("SELECT actor FROM audit_log "
                               "WHERE action = 'device.commanded'").fetchall()
    assert rows == [(f"{site}-gw", "set", {"actuator": "aerator", "state": "on",
                                          "duration_s": 900.0}, "pending", "pond-operator")]
    assert audited == [("pond-operator",)]
