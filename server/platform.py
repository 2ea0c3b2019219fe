"""Everything `tidefield up` runs, started in order and stopped in reverse.

External services are used when their URLs are set; otherwise embedded ones are run from
``settings.data_dir``, initialised on first use and reused after.
"""

from __future__ import annotations

import logging

import psycopg

from tidefield.protocol.registry import load_sites
from tidefield.server.db.migrate import migrate
from tidefield.server.db.registry import load_registry
from tidefield.server.embedded import MosquittoBroker, PostgresCluster
from tidefield.server.settings import Settings

log = logging.getLogger(__name__)


class Platform:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database_url = settings.database_url
        self.mqtt_url = settings.mqtt_url
        self._postgres: PostgresCluster | None = None
        self._broker: MosquittoBroker | None = None

    def start(self) -> None:
        data = self.settings.data_dir.resolve()
        if self.database_url is None:
            self._postgres = PostgresCluster(data / "postgres",
                                             port=self.settings.embedded_pg_port)
            self._postgres.start()
            self.database_url = self._postgres.create_database("tidefield")
        if self.mqtt_url is None:
            self._broker = MosquittoBroker(data / "mosquitto",
                                           port=self.settings.embedded_mqtt_port)
            self._broker.start()
            self.mqtt_url = self._broker.url
        migrate(self.database_url)
        with psycopg.connect(self.database_url) as conn:
            summary = load_registry(conn, load_sites())
        log.info("registry loaded", extra={"sites": summary.sites, "series": summary.series})

    def describe(self) -> str:
        return (f"database  {self.database_url}\n"
                f"broker    {self.mqtt_url}")

    def stop(self) -> None:
        for service in (self._broker, self._postgres):
            if service is not None:
                try:
                    service.stop()
                except Exception:  # keep stopping the others
                    log.exception("could not stop %s", type(service).__name__)
