"""The dashboards in a real browser: `tidefield dashboard` (streamlit run) on the real API
over a seeded database, opened in Debian's headless Chromium through its chromedriver,
signed in through the sign-in form (each page load is a new Streamlit session, so each
asks to sign in; the session token stays on the server).

Screenshots go to test-artifacts/dashboards/ (TIDEFIELD_TEST_ARTIFACTS to change it);
with TIDEFIELD_UPDATE_SCREENSHOTS=1 they are also copied to docs/screenshots/ for the
README and docs/dashboards.md.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.dashboards import ApiServer, seed_fleet
from tests.support.people import PASSWORD, add_person, two_companies
from tidefield.server.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("TIDEFIELD_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "dashboards"
RENDER_TIMEOUT_S = 60
MAP = '[data-testid="stDeckGlJsonChart"]'
CHART = '[data-testid="stVegaLiteChart"]'
EXCEPTION = '[data-testid="stException"]'


@pytest.fixture
def dashboard(db_url, tmp_path):
    fleet = seed_fleet(db_url)
    with psycopg.connect(db_url) as conn:
        add_person(conn, "duty-officer", {1: "operator"})  # the platform office's
        add_person(conn, "chief", {1: "admin"})
        companies = two_companies(conn, a_kind="greenhouse", b_kind="cage_farm")
    with ApiServer(db_url) as api:
        port = free_port()
        log = open(tmp_path / "streamlit.log", "wb")  # noqa: SIM115
        env = {**os.environ, "TIDEFIELD_API_URL": api.url,
               "TIDEFIELD_DASHBOARD_LANGUAGE": "en", "TIDEFIELD_DASHBOARD_REFRESH_S": "0",
               "TIDEFIELD_DASHBOARD_PORT": str(port)}
        proc = subprocess.Popen([sys.executable, "-m", "tidefield.cli", "dashboard"],
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "streamlit.log").read_text()[-3000:])
                time.sleep(0.2)
            yield {"url": url, "fleet": fleet, "companies": companies, "db_url": db_url}
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
            log.close()


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1440,1700", "--lang=en-US",
                 # deck.gl draws with WebGL: software rendering, as there is no GPU
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, css: str, count: int = 1):
    def found(d):
        elements = d.find_elements(By.CSS_SELECTOR, css)
        return elements if len(elements) >= count else False

    try:
        return WebDriverWait(driver, RENDER_TIMEOUT_S).until(found)
    except TimeoutException:
        shot(driver, "timeout")
        raise


def settle(driver) -> None:
    """Until Streamlit says the script finished (its status widget is gone)."""
    WebDriverWait(driver, RENDER_TIMEOUT_S).until(lambda d: not d.find_elements(
        By.CSS_SELECTOR, '[data-testid="stStatusWidget"]'))
    time.sleep(1.0)  # charts and the map draw after the script's last message


def shot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("TIDEFIELD_UPDATE_SCREENSHOTS") == "1":
        docs = ROOT / "docs" / "screenshots"
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, docs / path.name)
    return path


def open_signed_in(driver, url: str, username: str = "duty-officer") -> None:
    """Load ``url``, which shows the sign-in form first, and sign in: the page asked for
    follows."""
    driver.get(url)
    (name,) = wait_for(driver, 'input[aria-label="User name"]')
    name.send_keys(username)
    driver.find_element(By.CSS_SELECTOR, 'input[aria-label="Password"]').send_keys(PASSWORD)
    driver.find_element(By.XPATH, "//button[.//p[text()='Sign in']]").click()
    WebDriverWait(driver, RENDER_TIMEOUT_S).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, 'input[aria-label="User name"]'))


def colours(element) -> set[tuple[int, int, int]]:
    image = Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB")
    return set(image.get_flattened_data())


def near(found: set[tuple[int, int, int]], rgb: tuple[int, int, int], tol: int = 12) -> bool:
    return any(all(abs(a - b) <= tol for a, b in zip(c, rgb, strict=True)) for c in found)


@pytest.mark.slow
def test_overview_and_site_pages_render_in_chromium(dashboard, browser):
    browser.get(dashboard["url"])
    wait_for(browser, 'input[aria-label="User name"]')  # nobody signed in: the form only
    assert browser.find_element(By.CSS_SELECTOR, "h1").text == "Sign in"
    assert not browser.find_elements(By.CSS_SELECTOR, MAP)
    open_signed_in(browser, dashboard["url"])  # the overview is the default page
    (deck,) = wait_for(browser, MAP)
    wait_for(browser, f"{MAP} canvas")
    settle(browser)
    shot(browser, "overview")
    assert not browser.find_elements(By.CSS_SELECTOR, EXCEPTION)
    title = browser.find_element(By.CSS_SELECTOR, "h1").text
    assert title == "Site overview"
    drawn = colours(deck)
    # the map drew its layers: sea, land, and sites in the colours of their states
    assert near(drawn, (200, 225, 245)) and near(drawn, (246, 243, 234))
    assert near(drawn, (220, 40, 40)) and near(drawn, (130, 130, 130))
    sidebar = browser.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"]')
    assert "中文" in sidebar.text and "English" in sidebar.text
    # switch to Chinese: title and site names change
    sidebar.find_element(By.XPATH, ".//label[.//p[text()='中文']]").click()
    WebDriverWait(browser, RENDER_TIMEOUT_S).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "h1").text == "站点总览")
    wait_for(browser, f"{MAP} canvas")
    settle(browser)
    shot(browser, "overview-zh")
    assert "告警: 1" in browser.find_element(By.CSS_SELECTOR, "main").text  # the legend
    sidebar.find_element(By.XPATH, ".//label[.//p[text()='English']]").click()
    WebDriverWait(browser, RENDER_TIMEOUT_S).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "h1").text == "Site overview")

    site = dashboard["fleet"].ocean
    open_signed_in(browser, f"{dashboard['url']}/site?site={site.id}")
    charts = wait_for(browser, f"{CHART} canvas, {CHART} svg", count=4)
    settle(browser)
    shot(browser, "site")
    assert not browser.find_elements(By.CSS_SELECTOR, EXCEPTION)
    assert site.name_en in browser.find_element(By.CSS_SELECTOR, "main").text
    # a chart really drew a line: more than its background and axis colours
    assert len(colours(charts[0])) > 20


@pytest.mark.slow
def test_alerts_and_labs_pages_render_in_chromium(dashboard, browser, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    alert_id = dashboard["fleet"].alert_ids["hypoxia"]
    with psycopg.connect(dashboard["db_url"]) as conn:  # the detector suggested aerators
        conn.execute("""INSERT INTO alert_responses (alert_id, site_id, device_id, actuator,
                                                     duration_s, command_id, reason,
                                                     suggested_at)
                        SELECT a.id, a.site_id, d.id, 'aerator', 10800, 'resp-browser-0001',
                               'suggest mode', now()
                        FROM alerts a JOIN devices d ON d.site_id = a.site_id
                        WHERE a.id = %s ORDER BY d.id LIMIT 1""", (alert_id,))
    open_signed_in(browser, f"{dashboard['url']}/alerts?alert={alert_id}")
    wait_for(browser, f"{CHART} canvas, {CHART} svg")
    settle(browser)
    shot(browser, "alerts")
    assert not browser.find_elements(By.CSS_SELECTOR, EXCEPTION)
    assert "Acknowledge" in browser.find_element(By.CSS_SELECTOR, "main").text
    # run the suggested response: the page calls the API, which issues the command
    browser.find_element(By.XPATH, "//button[.//p[text()='Run suggested action']]").click()
    WebDriverWait(browser, RENDER_TIMEOUT_S).until(lambda d: "Command resp-browser-0001 "
                                                   "issued" in d.find_element(
                                                       By.CSS_SELECTOR, "main").text)
    assert "run by duty-officer" in browser.find_element(By.CSS_SELECTOR, "main").text
    with psycopg.connect(dashboard["db_url"]) as conn:
        assert conn.execute("SELECT id, issued_by FROM device_commands").fetchall() == [
            ("resp-browser-0001", "duty-officer")]

    fleet = dashboard["fleet"]
    series_id = fleet.series[(f"{fleet.ocean.id}-sonde", "dissolved_oxygen")]
    open_signed_in(browser, f"{dashboard['url']}/labs?site={fleet.ocean.id}&series={series_id}")
    buttons = wait_for(browser, '[data-testid="stDownloadButton"] button', count=2)
    wait_for(browser, f"{CHART} canvas, {CHART} svg")
    settle(browser)
    shot(browser, "labs")
    assert not browser.find_elements(By.CSS_SELECTOR, EXCEPTION)
    # the CSV download is fetched from the API's export when clicked
    browser.execute_cdp_cmd("Browser.setDownloadBehavior",
                            {"behavior": "allow", "downloadPath": str(downloads)})
    buttons[0].click()
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    while not (done := [p for p in downloads.glob("*.csv")]):
        assert time.monotonic() < deadline, "no CSV was downloaded"
        time.sleep(0.2)
    lines = done[0].read_text().splitlines()
    assert lines[0].replace('"', "") == ("site_id,device_id,metric,time,value,qartod_flag,"
                                          "qartod_test,maintenance")  # each reading's flag
    assert len(lines) - 1 == 36 * 60  # every raw reading of the seeded 36 hours


@pytest.mark.slow
def test_two_people_of_two_companies_see_only_their_own_in_chromium(dashboard, browser):
    companies, fleet = dashboard["companies"], dashboard["fleet"]
    counts = {}
    for person, own in (("anna", len(companies.a_sites) + 1),  # + the granted site
                        ("bob", len(companies.b_sites))):
        open_signed_in(browser, dashboard["url"], person)
        wait_for(browser, f"{MAP} canvas")
        settle(browser)
        shot(browser, f"overview-{person}")
        metric = browser.find_element(By.XPATH, "//*[@data-testid='stMetric']"
                                                "[.//p[text()='Sites']]")
        counts[person] = int(metric.find_element(
            By.CSS_SELECTOR, '[data-testid="stMetricValue"]').text)
        assert counts[person] == own, person
        # a link to B's alert shows anna nothing of it
        open_signed_in(browser, f"{dashboard['url']}/alerts?alert="
                                f"{fleet.alert_ids['hypoxia']}", person)
        settle(browser)
        subheaders = " ".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, "h3"))
        assert ("Hypoxia" in subheaders or "hypoxia" in subheaders) == (person == "bob")
        assert not browser.find_elements(By.CSS_SELECTOR, EXCEPTION)
    assert counts["anna"] != counts["bob"]


def click_button(driver, text: str) -> None:
    driver.find_element(By.XPATH, f"//button[.//p[text()={text!r}]]").click()


def wait_for_text(driver, text: str, name: str) -> None:
    try:
        WebDriverWait(driver, RENDER_TIMEOUT_S).until(
            lambda d: text in d.find_element(By.CSS_SELECTOR, "main").text)
    except TimeoutException:
        shot(driver, f"{name}-timeout")
        raise


def type_into(driver, label: str, text: str) -> None:
    field = wait_for(driver, f'input[aria-label="{label}"]')[0]
    field.send_keys(text)


@pytest.mark.slow
def test_the_fleet_admin_and_health_pages_work_in_chromium(dashboard, browser):
    """An admin creates a site and hands out its gateway's login in the browser; an
    operator puts it in maintenance from the health page."""
    # an admin page exists only for admins, so signed out /fleet is no page: sign in
    # first, then follow the sidebar's link
    open_signed_in(browser, dashboard["url"], "chief")
    settle(browser)
    link = browser.find_element(By.XPATH, "//*[@data-testid='stSidebar']"
                                          "//a[contains(., 'Fleet admin')]")
    link.click()
    wait_for(browser, 'input[aria-label="Id (a-z, 0-9, -)"]')
    settle(browser)
    assert browser.find_element(By.CSS_SELECTOR, "h1").text == "Sites and devices"
    type_into(browser, "Id (a-z, 0-9, -)", "gh-555\t")
    type_into(browser, "Name (Chinese)", "浏览器温室\t")
    type_into(browser, "Name (English)", "Browser greenhouse\t")
    settle(browser)
    click_button(browser, "Create site")
    WebDriverWait(browser, RENDER_TIMEOUT_S).until(lambda d: "Site gh-555 created" in
                                                   d.find_element(By.CSS_SELECTOR, "main").text)
    settle(browser)
    shot(browser, "fleet")
    assert not browser.find_elements(By.CSS_SELECTOR, EXCEPTION)
    with psycopg.connect(dashboard["db_url"]) as conn:
        row = conn.execute("SELECT name_en, kind FROM sites WHERE id = 'gh-555'").fetchone()
    assert row == ("Browser greenhouse", "greenhouse")  # the kind chosen first by default

    browser.find_element(By.XPATH, "//label[.//p[text()='Devices']]").click()
    settle(browser)
    click_button(browser, "Make broker login")
    wait_for_text(browser, "shown this once", "fleet-login")
    settle(browser)
    shot(browser, "fleet-login")
    main = browser.find_element(By.CSS_SELECTOR, "main").text
    assert "username:" in main and "Download agent config edge.yaml" in main

    open_signed_in(browser, f"{dashboard['url']}/health", "duty-officer")
    wait_for(browser, '[data-testid="stDataFrame"]')
    settle(browser)
    assert browser.find_element(By.CSS_SELECTOR, "h1").text == \
        "Device health, by what needs a visit"
    type_into(browser, "Reason", "sonde cleaning\t")
    settle(browser)
    click_button(browser, "Start maintenance")
    WebDriverWait(browser, RENDER_TIMEOUT_S).until(lambda d: "Maintenance until" in
                                                   d.find_element(By.CSS_SELECTOR, "main").text)
    settle(browser)
    shot(browser, "health")
    assert not browser.find_elements(By.CSS_SELECTOR, EXCEPTION)
    with psycopg.connect(dashboard["db_url"]) as conn:
        assert conn.execute("SELECT reason, created_by FROM maintenance_windows"
                            ).fetchall() == [("sonde cleaning", "duty-officer")]
