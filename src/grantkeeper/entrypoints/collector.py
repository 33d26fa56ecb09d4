"""The garbage collector set for the long-running processes (``grantkeeper worker`` and ``serve``).

With CPython's defaults the collector took 0.47 s of a worker's 8.6 s of CPU over 30,000 refreshes at
concurrency 32, timed collection by collection with ``gc.callbacks`` (``docs/benchmarks.md``, tenth
session). Two settings took it to 0.03 s:

- ``gc.freeze()`` once the process has started: what the imports and the runtime built (SQLAlchemy's
  tables and caches, the app's objects) lives as long as the process, and every full collection walked all
  of it to find nothing (0.23 s of the 0.47).
- a young generation of 2,000 tracked objects instead of 700: a claim builds several hundred objects at once
  and keeps them until their attempts end, so at 700 the collector ran about every tick and found nearly
  everything still alive (0.20 s). At 2,000 it runs a quarter as often; a threshold of 50,000 was slower
  (the fifth session: each young collection then walked more than the caches hold).

Reference cycles are still collected, a little later; the memory bar (``bench/worker_memory.py``) holds.
"""

from __future__ import annotations

import gc

#: Young-generation threshold for the long-running processes (CPython's default is 700).
YOUNG_GENERATION_THRESHOLD = 2_000


def settle_after_start() -> None:
    """Freeze what start-up built and widen the young generation; call once the process is ready to work."""
    gc.collect()  # what start-up left as garbage goes now, not frozen with the rest
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)
