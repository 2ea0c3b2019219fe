"""Early warning: short-horizon forecasts of the series an event threshold watches.

``forecaster.Forecaster`` keeps, per series a ``forecast`` rule names (dissolved oxygen
toward the night's minimum, air temperature toward dawn, the pressure's fall from its
high), a model learned online and, for every reading, the confidence that the series
crosses its rule's threshold within the horizon, the expected time of the crossing and
an 80 % band there. The rules kernel turns the confidence into warnings (alerts of
category ``forecast``) with the same lifecycle as every alert; the engine closes a
warning when the real alert it foretold opens (escalation).

The kernels (``_kernels.py``) are twinned in ``forecast_twins.py`` (plain Python, one
object per series); the tests compare the two.
"""
