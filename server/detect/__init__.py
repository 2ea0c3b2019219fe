"""Anomaly detection: Numba kernels over per-series state, domain rules, alerts.

Public entry points: ``Detector`` and ``score_values`` (scoring), ``DetectorParams``,
``load_rules``, ``Engine`` and ``AlertBook`` (rules and alert lifecycle); the service
(``tidefield detect run``) lives in ``service``.
"""

from .alerts import AlertBook, Engine
from .detector import Detector, DetectorInputError, Scores, SeriesInfo, score_values
from .rules import RulesError, load_rules
from .tuning import DetectorParams

__all__ = ["AlertBook", "Detector", "DetectorInputError", "DetectorParams", "Engine",
           "RulesError", "Scores", "SeriesInfo", "load_rules", "score_values"]
