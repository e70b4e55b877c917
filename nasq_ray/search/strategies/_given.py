"""``given``: proposes nothing of its own; the trials are the warm-start configs the trial kind gives
(``search.warm_start``), e.g. the front a one-shot search fine-tunes, and the search ends after them."""

from __future__ import annotations

from ._base import FINISHED, BaseStrategy


class GivenStrategy(BaseStrategy):
    def suggest(self, trial_id):
        return FINISHED

    def on_trial_complete(self, trial_id, config, result):
        pass
