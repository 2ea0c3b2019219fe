"""Every dashboard page under Streamlit's AppTest, against the real API over a real,
seeded database."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import psycopg
import pytest
from streamlit.testing.v1 import AppTest

import tidefield.dashboards
from tests.support.dashboards import ApiServer, seed_fleet
from tidefield.dashboards import data
from tidefield.protocol.registry import load_sites
from tidefield.server.api.keys import Scope, create_key
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
        key = create_key(conn, "control-room", [Scope.READ])
    with ApiServer(url) as api:
        yield {"url": url, "fleet": fleet, "key": key, "api": api}
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def configure(monkeypatch):
    """Point the dashboards at an API (the environment is their configuration)."""

    def apply(api_url: str, key: str | None, **extra: str) -> None:
        monkeypatch.setenv("TIDEFIELD_API_URL", api_url)
        if key is None:
            monkeypatch.delenv("TIDEFIELD_API_KEY", raising=False)
        else:
            monkeypatch.setenv("TIDEFIELD_API_KEY", key)
        for name, value in extra.items():
            monkeypatch.setenv(f"TIDEFIELD_{name.upper()}", value)
        data.clear_all()

    yield apply
    data.clear_all()


def open_page(page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update(query)
    at.run()
    if page:
        at.switch_page(page)
        at.query_params.update(query)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def frame_of(at: AppTest, index: int = 0) -> pd.DataFrame:
    return at.dataframe[index].value


# --- site --------------------------------------------------------------------------
def test_site_page_shows_latest_values_charts_and_device_health(world, configure):
    configure(world["api"].url, world["key"], dashboard_language="en")
    ocean = world["fleet"].ocean
    at = open_page("pages/site.py", site=ocean.id)
    assert at.title[0].value == "Site details"
    assert at.selectbox(key="site").value == ocean.id
    latest = frame_of(at, 0)
    sensors = [m for d in ocean.devices for m in d.template.metrics
               if m not in ("battery_voltage", "signal_rssi")]
    assert len(latest) == len(sensors)
    assert latest["Value"].notna().all()
    # 36 hours of readings: the 24-hour sparkline has 24 or 25 hourly means
    assert latest["Last 24 h"].map(len).between(24, 25).all()
    charts = at.get("arrow_vega_lite_chart")
    assert len(charts) == 4  # the first four metrics by default
    health = frame_of(at, 2)
    assert set(health["Device"]) == {d.id for d in ocean.devices}
    assert (health["State"] == "online").all()
    gateway = health.set_index("Device").loc[f"{ocean.id}-gw"]
    assert 11 <= gateway["Battery (V)"] <= 14.5


def test_site_page_shows_an_offline_device(world, configure):
    configure(world["api"].url, world["key"], dashboard_language="en")
    farm = world["fleet"].farm
    at = open_page("pages/site.py", site=farm.id)
    health = frame_of(at, 2).set_index("Device")
    assert health.loc[f"{farm.id}-soil", "State"] == "offline"
    assert health.loc[f"{farm.id}-climate", "State"] == "online"


def test_site_page_range_switch_uses_rollups(world, configure):
    configure(world["api"].url, world["key"], dashboard_language="en")
    at = open_page("pages/site.py", site=world["fleet"].ocean.id)
    at.radio(key="range").set_value("7d").run()
    assert not at.exception
    assert any("1 hour" in c.value for c in at.caption)


# --- labs --------------------------------------------------------------------------
def test_labs_page_lists_previews_and_offers_downloads(world, configure):
    configure(world["api"].url, world["key"], dashboard_language="en")
    fleet = world["fleet"]
    at = open_page("pages/labs.py")
    at.selectbox(key="l_site").set_value(fleet.ocean.id).run()
    at.selectbox(key="l_metric").set_value("dissolved_oxygen").run()
    listed = frame_of(at, 0)
    wanted = {sid for (dev, metric), sid in fleet.series.items()
              if metric == "dissolved_oxygen" and dev.startswith(fleet.ocean.id)}
    assert set(listed["Series"]) == wanted and len(wanted) == 2  # sonde and sonde2
    at.radio(key="l_bucket").set_value("raw").run()
    assert not at.exception
    preview = frame_of(at, 1)
    # raw readings of a 1-minute sonde over the last 7 days: all 36 h seeded
    assert 36 * 60 - 2 <= len(preview) <= 36 * 60
    assert at.get("download_button")


def test_language_switch_changes_titles_and_site_names(world, configure):
    configure(world["api"].url, world["key"], dashboard_language="zh")
    ocean = world["fleet"].ocean
    at = open_page("pages/site.py", site=ocean.id)
    assert at.title[0].value == "站点详情"
    assert ocean.name_zh in at.selectbox(key="site").format_func(ocean.id)
    at.sidebar.radio(key="lang").set_value("en").run()
    assert at.title[0].value == "Site details"
    assert ocean.name_en in at.selectbox(key="site").format_func(ocean.id)
    assert "Latest values" in [s.value for s in at.subheader]


# --- failures ----------------------------------------------------------------------
@pytest.mark.parametrize("page", [None, "pages/site.py", "pages/alerts.py", "pages/labs.py"])
def test_an_unreachable_api_shows_a_banner_not_a_stack_trace(configure, page):
    configure(f"http://127.0.0.1:{free_port()}", "tf_abc_def", dashboard_language="en")
    at = open_page(page)
    assert not at.exception
    assert "cannot be reached" in at.error[0].value


def test_a_refused_key_says_which_setting_to_check(world, configure):
    configure(world["api"].url, "tf_nope_nope", dashboard_language="en")
    at = open_page("pages/site.py", site=load_sites()[0].id)
    assert "TIDEFIELD_API_KEY" in at.error[0].value


def test_no_key_configured_says_how_to_make_one(world, configure):
    configure(world["api"].url, None, dashboard_language="en")
    at = open_page()
    assert "tidefield keys create" in at.error[0].value
