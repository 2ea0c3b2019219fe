"""Private PostgreSQL+TimescaleDB and Mosquitto instances, run as child processes.

`tidefield up` runs the platform on them when no external service is configured, and the
test suite starts its own on free ports in temporary folders, so neither depends on nor
disturbs whatever else runs on the machine.
"""

from .mosquitto import MosquittoBroker
from .ports import free_port, wait_for_port
from .postgres import PostgresCluster

__all__ = ["MosquittoBroker", "PostgresCluster", "free_port", "wait_for_port"]
