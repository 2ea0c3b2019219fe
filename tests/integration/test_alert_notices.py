"""Alert notices over MQTT are isolated too: an organisation's broker login reads the
alert topics of the sites it may read (its own, those granted to it) and no other, on a
real Mosquitto with the dynamic-security plugin."""

from __future__ import annotations

import time

import psycopg

from tests.support.people import two_companies
from tidefield.protocol.topics import alerts_topic
from tidefield.server.security.accounts import provision_organisation, provision_service
from tidefield.server.security.dynsec import BrokerAccess

from .test_security import NOT_AUTHORIZED, Probe, _start_secured, _wait_for


def test_an_organisations_login_reads_only_its_sites_alerts(db_url):
    with psycopg.connect(db_url) as conn:
        companies = two_companies(conn)
    stack = _start_secured(db_url, devices=[])
    try:
        with psycopg.connect(db_url) as conn:
            login = provision_organisation(conn, companies.a_org)
            detector = provision_service(conn, "detector")
            stack.passwords[login.username] = login.password
            stack.passwords[detector.username] = detector.password
            stack.files.sync(conn, detector)  # each new login's password, once
            result = stack.files.sync(conn, login)
        assert result.live and not result.problems, result.problems
        own, granted, hidden = (companies.a_sites[0], companies.granted,
                                companies.b_hidden[0])
        watcher = Probe(stack.url(login.username))
        assert watcher.connect() == 0
        for topic in ("tf/v1/+/alerts", "#", alerts_topic(hidden),
                      f"tf/v1/{own}/+/up"):
            assert watcher.subscribe(topic) == [NOT_AUTHORIZED], topic
        assert watcher.subscribe(alerts_topic(own)) == [1]
        assert watcher.subscribe(alerts_topic(granted)) == [1]
        publisher = Probe(stack.url(detector.username))
        assert publisher.connect() == 0
        for site in (own, granted, hidden):
            assert publisher.publish(alerts_topic(site), f'{{"site": "{site}"}}'.encode()) \
                in (0, 16)  # 16: no subscriber matched (the hidden site's)
        _wait_for(lambda: len(watcher.messages) == 2, 10, "the two notices of A's sites")
        time.sleep(0.5)
        assert sorted(topic for topic, _ in watcher.messages) == sorted(
            [alerts_topic(own), alerts_topic(granted)])
        for probe in (watcher, publisher):
            probe.close()
        # the organisation's rules list its sites and nothing else
        assert {r.topic for r in login.rules} == {alerts_topic(s) for s in
                                                  [*companies.a_sites, granted]}
    finally:
        stack.broker.stop()
    assert isinstance(stack.files, BrokerAccess)
