"""``entrypoints.collector``: the collector settings of the long-running processes, applied in a fresh
interpreter (freezing this test process's objects would outlive the test)."""

from __future__ import annotations

import json
import subprocess
import sys

from grantkeeper.entrypoints.collector import YOUNG_GENERATION_THRESHOLD

_PROBE = """
import gc, json
from grantkeeper.entrypoints.collector import settle_after_start
before = (gc.get_threshold(), gc.get_freeze_count())
settle_after_start()
print(json.dumps({"before": before, "after": (gc.get_threshold(), gc.get_freeze_count())}))
"""


def test_once_started_what_start_up_built_is_frozen_and_the_young_generation_is_wider() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    seen = json.loads(done.stdout)
    (young, middle, old), frozen = seen["before"]
    assert frozen == 0
    assert seen["after"] == [[YOUNG_GENERATION_THRESHOLD, middle, old], seen["after"][1]]
    assert seen["after"][1] > 1_000  # the imports' objects: full collections no longer walk them
    assert young < YOUNG_GENERATION_THRESHOLD
