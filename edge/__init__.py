"""The Tidefield edge agent, for Raspberry-Pi-class gateways at farms and on buoys.

    drivers (a thread each) --put--> DiskQueue (SQLite, WAL) --take--> Publisher --> MQTT
                                            ^                                 |  v5, QoS 1
                                            +-------------ack on PUBACK-------+

* ``config``: the YAML config, validated up front (``deploy/edge.yaml`` is the sample).
* ``drivers``: the ``Driver`` protocol, the registry, and the drivers (simulated, Modbus
  TCP/RTU, DS18B20 on 1-Wire).
* ``queue``: the disk queue; a reading leaves it only when its batch's PUBACK arrives.
* ``publisher``: the one module that talks to the broker.
* ``agent``: the threads that wire it up, and the agent's own health metrics.
* ``main``, ``__main__`` (``python -m tidefield.edge run --config edge.yaml``) and
  ``cli`` (``tidefield edge run``): entry points.

Nothing here imports NumPy, except the simulated driver (for demos and tests) when one
is configured. Readings keep the time they were read at through any outage, so a
backlog arrives as history. The device clock must be right: a Pi without a real-time
clock should not start the agent before NTP has synchronised (see the systemd unit).
"""
