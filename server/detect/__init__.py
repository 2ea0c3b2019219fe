"""Anomaly detection: Numba kernels over per-series state, domain rules, alerts.

Public entry points: ``Detector`` and ``score_values`` (scoring), ``DetectorParams``,
``load_rules``, ``Engine`` (detector, rules and alert book over a batch) and ``AlertBook``;
the service (``tidefield detect run``) is ``service`` (the loop) over ``store`` (its SQL).
"""

from .alerts import AlertBook
from .detector import Detector, DetectorInputError, Scores, SeriesInfo, score_values
from .engine import Engine
from .rules import RulesError, load_rules
from .tuning import DetectorParams

__all__ = ["AlertBook", "Detector", "DetectorInputError", "DetectorParams", "Engine",
           "RulesError", "Scores", "SeriesInfo", "load_rules", "score_values"]
