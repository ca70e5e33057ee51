"""Hypothesis profiles for the fuzz tests: ``ci`` (the default, used by ``make test``) and ``dev``.

``ci`` runs a fixed, small number of derandomized examples per property, so the whole fuzz set
stays well under a minute on the 2-core test bed; ``HYPOTHESIS_PROFILE=dev`` runs many more,
randomized, for local hunting.
"""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, derandomize=True, deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow], print_blob=True,
)
settings.register_profile(
    "dev", max_examples=3000, deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow], print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
