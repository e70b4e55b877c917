"""The search through Ray Tune: the only package that imports Ray.

* :mod:`.driver` - :func:`run_search` / :func:`resume_search`, one experiment end to end.
* :mod:`.trainable` - the function Ray runs for each trial (the trial kind's ``run``).
* :mod:`.searchers` - strategies behind Ray's ``Searcher``, warm-start configs first.
* :mod:`.schedulers` - schedulers by name (Ray's own, ``moasha``), PBT's space handling.
* :mod:`.domains` - space domains as Ray Tune domains.
* :mod:`.session` - Ray's life cycle: checks before it starts, ``ray.init``, signals, storage.
* :mod:`.callbacks`, :mod:`.checkpoint_gc`, :mod:`.experiment_state` - what runs beside the trials.
* :mod:`.strategies` - the search strategies (Ray-free: a plug-in author need not learn Ray).
"""

import os

# Quiet Ray by default (--verbose brings its logs back); set before Ray Tune is imported.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the new reporter prints a header even at verbose=0
