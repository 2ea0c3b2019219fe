"""Time on the wire and in the database: integer milliseconds since the Unix epoch (UTC).

The lengths every part computes with, defined once.
"""

from __future__ import annotations

from typing import Final

SECOND_MS: Final = 1_000
MINUTE_MS: Final = 60 * SECOND_MS
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS
