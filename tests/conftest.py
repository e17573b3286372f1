"""Hypothesis profiles for the property tests.

``repeatable`` (the default, so ``make test`` and CI): every run draws the same examples
(``derandomize``), so a red run means the code changed, not that a new draw was unlucky.
``explore`` (``make fuzz``): new examples every run, and failures are kept in ``.hypothesis/``
and tried first next time. A counterexample ``explore`` finds is fixed and pinned with
``@example`` so that the repeatable runs keep it.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
