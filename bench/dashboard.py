"""Dashboard page render times with about 50 million readings in the database.

    .venv/bin/python bench/dashboard.py [--days 17] [--rounds 5] [--no-browser]

Loads the readings as bench/api.py does (binary COPY, then the rollups), marks the
devices seen (a few gone offline), adds alerts and anomalies, starts `tidefield api`, then
for each page (overview; a cage farm's site page; an alert; labs on one series):

* page, cold: the page's whole script under Streamlit's AppTest with every cache
  cleared first, so each API call it needs is made;
* page, warm: the same again within the cache TTLs;
* baseline: exactly the API requests the cold run made, replayed one after another
  with a bare httpx client (no Streamlit, no pandas, no charts);
* browser (unless --no-browser): `tidefield dashboard` in headless Chromium, from
  navigation until the page's map or charts are drawn and the script has finished;
  its baseline is a bare Streamlit page (one title) loaded the same way in the same
  browser, which is what Streamlit and Chromium cost by themselves on this machine.

Prints medians in ms and the ratio of the cold page to its baseline. Target: every page
under 2 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api import load
from bench.common import private_database, table
from tidefield.server.embedded import free_port
from tidefield.server.security.api_keys import Scope, create_key

TARGET_MS = 2000
PG_CONF = {"shared_buffers": "1GB", "max_wal_size": "8GB", "effective_cache_size": "4GB"}


def seed_operations(url: str) -> dict:
    """Device status (5% offline), 600 alerts (40 still active) and anomalies on the
    dissolved-oxygen series; returns the ids the pages are opened on."""
    with psycopg.connect(url) as conn:
        conn.execute("""
            INSERT INTO device_status (device_id, state, state_changed, birth_at, last_seen,
                                       last_reading, min_seq, max_seq, batches, readings)
            SELECT id, CASE WHEN hashtext(id) % 20 = 0 THEN 'offline' ELSE 'online' END,
                   now() - interval '1 day', now() - interval '17 days',
                   CASE WHEN hashtext(id) % 20 = 0 THEN now() - interval '2 days'
                        ELSE now() END, now(), 0, 1000, 1000, 100000
            FROM devices""")
        oxygen = conn.execute(
            "SELECT s.id, s.device_id, d.site_id FROM series s JOIN devices d "
            "ON d.id = s.device_id WHERE s.metric = 'dissolved_oxygen' ORDER BY s.id"
        ).fetchall()
        rows = []
        for n in range(600):
            sid, device, site = oxygen[n % len(oxygen)]
            active = n >= 560  # the newest 40 are still active
            state = ("open" if n % 2 else "acknowledged") if active else "closed"
            hours_ago = (600 - n) * 0.6
            rows.append((site, device, sid, ("critical", "warning", "info")[n % 3], state,
                         hours_ago, None if active else hours_ago - 0.5,
                         "bench" if state == "acknowledged" else None,
                         state == "acknowledged"))
        # NULL hours make a NULL closed_at: now() - NULL * interval is NULL
        conn.cursor().executemany(
            """INSERT INTO alerts (site_id, device_id, series_id, rule, category, severity,
                   state, message, opened_at, updated_at, closed_at, value, peak_value,
                   acknowledged_by, acknowledged_at)
               VALUES (%s, %s, %s, 'hypoxia', 'event', %s, %s,
                       'dissolved oxygen under 3 mg/L', now() - %s::float8 * interval '1 hour',
                       now(), now() - %s::float8 * interval '1 hour', 2.5, 2.1, %s,
                       CASE WHEN %s::boolean THEN now() END)""", rows)
        conn.execute("""
            INSERT INTO anomalies (series_id, time, value, score, component, category)
            SELECT s.id, now() - (k * interval '17 minutes'), 2.4, 0.8, 'range', 'event'
            FROM series s, generate_series(1, 1400) k
            WHERE s.metric = 'dissolved_oxygen' ON CONFLICT DO NOTHING""")
        alert_id, site, series_id = conn.execute(
            "SELECT id, site_id, series_id FROM alerts WHERE state = 'open' "
            "ORDER BY id DESC LIMIT 1").fetchone()
        cage = conn.execute("SELECT id FROM sites WHERE kind = 'cage_farm' ORDER BY id "
                            "LIMIT 1").fetchone()[0]
        conn.commit()
        counts = conn.execute("SELECT (SELECT count(*) FROM alerts), "
                              "(SELECT count(*) FROM anomalies)").fetchone()
    print(f"{counts[0]} alerts, {counts[1]:,} anomalies", file=sys.stderr)
    return {"alert": alert_id, "alert_site": site, "alert_series": series_id, "cage": cage}


class Recorder:
    """Every request made by httpx clients of this process while ``on``: the dashboards'
    own calls, to be replayed as the baseline."""

    def __init__(self) -> None:
        self.on = False
        self.requests: list[tuple[str, str]] = []
        original = httpx.Client.send

        def send(client, request, **kwargs):
            if self.on:
                self.requests.append((request.method, str(request.url)))
            return original(client, request, **kwargs)

        httpx.Client.send = send


def pages(ids: dict) -> dict[str, tuple[str | None, dict, str]]:
    """name: (page file, query parameters, browser path)."""
    return {
        "overview": (None, {}, ""),
        "site": ("app_pages/site.py", {"site": ids["cage"]}, f"site?site={ids['cage']}"),
        "alerts": ("app_pages/alerts.py", {"alert": str(ids["alert"])},
                   f"alerts?alert={ids['alert']}"),
        "labs": ("app_pages/labs.py", {"site": ids["alert_site"],
                                       "series": str(ids["alert_series"])},
                 f"labs?site={ids['alert_site']}&series={ids['alert_series']}"),
    }


def time_apptest(page: str | None, query: dict, rounds: int, recorder: Recorder):
    from streamlit.testing.v1 import AppTest

    import tidefield.dashboards
    from tidefield.dashboards import data

    entry = Path(tidefield.dashboards.__file__).parent / "app.py"
    at = AppTest.from_file(str(entry), default_timeout=300)
    at.query_params.update(query)
    at.run()  # imports, the first page
    if page:
        at.switch_page(page)
        at.query_params.update(query)
    cold, warm = [], []
    for n in range(rounds):
        data.clear_all()
        recorder.requests.clear()
        recorder.on = n == 0
        started = time.perf_counter()
        at.run()
        cold.append((time.perf_counter() - started) * 1000)
        recorder.on = False
        if at.exception:
            raise RuntimeError(at.exception[0].value)
        if n == 0:
            requests = list(recorder.requests)
        started = time.perf_counter()
        at.run()
        warm.append((time.perf_counter() - started) * 1000)
    return cold, warm, requests


def time_baseline(requests: list[tuple[str, str]], key: str, rounds: int) -> list[float]:
    out = []
    with httpx.Client(headers={"X-API-Key": key}, timeout=120) as client:
        for _ in range(rounds):
            started = time.perf_counter()
            for method, url in requests:
                client.request(method, url).raise_for_status()
            out.append((time.perf_counter() - started) * 1000)
    return out


BARE_PAGE = "import streamlit as st\nst.title('baseline')\n"
READY = {  # what the page shows when done
    "bare Streamlit": ("h1", 1),
    "overview": ('[data-testid="stDeckGlJsonChart"] canvas', 1),
    "site": ('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg', 4),
    "alerts": ('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg', 1),
    "labs": ('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg', 1),
}


def time_browser(api_url: str, key: str, paths: dict[str, str], rounds: int
                 ) -> dict[str, list[float]]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tidefield.dashboards.data import LIVE_TTL_S

    port, bare_port = free_port(), free_port()
    bare = Path(tempfile.mkdtemp(prefix="tidefield-bench-")) / "bare.py"
    bare.write_text(BARE_PAGE)
    bare_proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(bare), "--server.port", str(bare_port),
         "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "TIDEFIELD_API_URL": api_url, "TIDEFIELD_API_KEY": key,
           "TIDEFIELD_DASHBOARD_REFRESH_S": "0", "TIDEFIELD_DASHBOARD_PORT": str(port),
           "TIDEFIELD_DASHBOARD_LANGUAGE": "en"}
    proc = subprocess.Popen([sys.executable, "-m", "tidefield.cli", "dashboard"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1440,1100", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader"):
        options.add_argument(flag)
    driver = None
    base = f"http://127.0.0.1:{port}"
    urls = {"bare Streamlit": f"http://127.0.0.1:{bare_port}/",
            **{name: f"{base}/{path}" for name, path in paths.items()}}
    try:
        for server in (base, f"http://127.0.0.1:{bare_port}"):
            for _ in range(300):
                try:
                    if httpx.get(f"{server}/_stcore/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
        driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
        out: dict[str, list[float]] = {name: [] for name in urls}
        for n in range(rounds + 1):  # the first round warms the browser up, untimed
            round_started = time.monotonic()
            for name, url in urls.items():
                css, count = READY[name]
                driver.get("about:blank")
                started = time.perf_counter()
                driver.get(url)
                WebDriverWait(driver, 120, poll_frequency=0.02).until(
                    lambda d, css=css, count=count: len(
                        d.find_elements(By.CSS_SELECTOR, css)) >= count
                    and not d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]'))
                if n:
                    out[name].append((time.perf_counter() - started) * 1000)
            # live answers (TTL) expire before the next round: each round fetches them
            time.sleep(max(0.0, LIVE_TTL_S + 1 - (time.monotonic() - round_started)))
        return out
    finally:
        if driver is not None:
            driver.quit()
        for child in (proc, bare_proc):
            os.killpg(child.pid, signal.SIGTERM)
            child.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=17, help="17 days: about 52 million")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    recorder = Recorder()
    with private_database(PG_CONF) as (_, url):
        total = load(url, args.days)
        ids = seed_operations(url)
        with psycopg.connect(url) as conn:
            key = create_key(conn, "bench", [Scope.READ, Scope.OPERATE])
        port = free_port()
        api = subprocess.Popen([sys.executable, "-m", "tidefield.cli", "api", "--port",
                                str(port)], env={**os.environ, "TIDEFIELD_DATABASE_URL": url})
        api_url = f"http://127.0.0.1:{port}"
        os.environ.update({"TIDEFIELD_API_URL": api_url, "TIDEFIELD_API_KEY": key,
                           "TIDEFIELD_DASHBOARD_REFRESH_S": "0",
                           "TIDEFIELD_DASHBOARD_LANGUAGE": "en"})
        try:
            for _ in range(300):
                try:
                    httpx.get(f"{api_url}/healthz", timeout=2).raise_for_status()
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            rows = []
            browser = {}
            if not args.no_browser:
                browser = time_browser(api_url, key, {n: p[2] for n, p in pages(ids).items()},
                                       max(3, args.rounds // 2))
            for name, (page, query, _) in pages(ids).items():
                cold, warm, requests = time_apptest(page, query, args.rounds, recorder)
                base = time_baseline(requests, key, args.rounds)
                cold_ms, base_ms = statistics.median(cold), statistics.median(base)
                shown = statistics.median(browser[name]) if browser else None
                bare_ms = statistics.median(browser["bare Streamlit"]) if browser else None
                rows.append((name, len(requests), f"{base_ms:.0f}", f"{cold_ms:.0f}",
                             f"{statistics.median(warm):.0f}", f"{cold_ms / base_ms:.2f}",
                             "yes" if cold_ms < TARGET_MS else "NO",
                             f"{shown:.0f}" if shown is not None else "-",
                             f"{shown / bare_ms:.1f}" if shown is not None else "-"))
            if browser:
                rows.append(("bare Streamlit page", "-", "-", "-", "-", "-", "-",
                             f"{statistics.median(browser['bare Streamlit']):.0f}", "1.0"))
        finally:
            api.terminate()
            api.wait(10)
    print(f"{total:,} readings, {args.days} days, 250 sites; medians of {args.rounds} rounds")
    print(table(rows, ("page", "API calls", "API baseline ms", "page cold ms",
                       "page warm ms", "cold / API baseline", "cold under 2 s",
                       "browser ms", "browser / bare page")))


if __name__ == "__main__":
    main()
