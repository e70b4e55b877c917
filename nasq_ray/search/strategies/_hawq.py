"""Sensitivity-based bits (HAWQ-V3): one config per budget spread along the cost axis, each the
integer program's choice of one weight width per layer (or per block / network, as the space's
policy shares them) that minimizes the summed Hessian sensitivity under that budget. A front from
as many trials as budgets; the strategy is finished when every budget has been proposed.

Needs per-layer sensitivities, which a trial kind computes from trained weights (the own-model
kind, ``--model``): the factory is offered them as ``sensitivity``. ``budgets`` (in the cost
metric's unit) replaces the even spread from the cheapest to the dearest choice (or ``max_cost``).
"""

from __future__ import annotations

from ...errors import ConfigError
from ...hawq import check_budgets, hawq_configs, spread_budgets
from ._base import FINISHED, BaseStrategy


class HawqStrategy(BaseStrategy):
    def __init__(self, space, objective, seed=0, budget=None, sensitivity=None, budgets=None):
        super().__init__(space, objective, seed)
        if sensitivity is None:
            raise ConfigError("searcher: hawq needs the per-layer sensitivities of a trained model, which only a "
                              "user-model run gives (--model MODULE:CALLABLE)")
        n = int(budget or 8)
        chosen = check_budgets(budgets) if budgets is not None else spread_budgets(sensitivity, n, objective.max_cost)
        lo, _ = sensitivity.cost_range()
        if budgets is not None and min(chosen) < lo:
            raise ConfigError(f"searcher_args.budgets: {min(chosen):g} is below the cheapest choice's "
                              f"{sensitivity.metric} ({lo:g}); allowed: budgets >= {lo:g}")
        self.planned = [(b, space.validate(cfg)) for b, cfg in hawq_configs(sensitivity, chosen)]
        self.given = 0
        self.budget_of: dict[str, float] = {}

    def suggest(self, trial_id):
        if self.given >= len(self.planned):
            return FINISHED
        budget, cfg = self.planned[self.given]
        self.given += 1
        self.budget_of[trial_id] = budget
        return dict(cfg)

    def on_trial_complete(self, trial_id, config, result):
        pass
