"""The order trials start in under eps_opt pruning: a Tune Searcher over fixed candidates.

Ray Tune 2.60 stages every pending trial in the order the search algorithm created them,
so the order must come from the searcher. `GuidedCandidates` holds the sweep's
configurations (the grid, or random draws made up front with the spec's seed) and, each
time a slot opens, proposes the one the eps_opt state ranks first (`start_priority`):
before a model, the middle of each batch size's lr range, spread over batch sizes;
with one, the configuration nearest ε_opt(B). Trials that rule 1 of the scheduler then
stops early are the ones far from the optimum, which is where the savings come from.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from trainables import keys
from tuner import theory
from tuner.config.spec import Spec
from tuner.strategy.candidates import Candidates, draw, read_pickle, write_pickle
from tuner.strategy.records import FrontView, TrialRecord
from tuner.strategy.start_order import Started, middle_lrs, start_priority


class GuidedCandidates(Candidates):
    """Proposes the sweep's candidates in the order the eps_opt state prefers; `law` is
    the sweep's ε_opt(B) law (tuner.theory.lr_laws)."""

    law = "sgd"  # what one pickled before there were laws reads

    def __init__(
        self, configs: list[dict[str, Any]], state: FrontView, mode: str = "min", law: str = "sgd"
    ) -> None:
        super().__init__(configs, mode)
        self.state = state
        self.law = law
        self.middle = middle_lrs(self._record(c) for c in configs)
        self.suggested = Started()

    def _record(self, config: dict[str, Any]) -> TrialRecord:
        return TrialRecord.from_config(config, self.law)

    def pick(self) -> int:
        model = self.state.model
        return min(
            range(len(self.remaining)),
            key=lambda i: start_priority(
                self._record(self.remaining[i]),
                self.suggested,
                self.middle,
                model,
                self.state.best,
                self.state.open_at,
            ),
        )

    def proposed(self, config: dict[str, Any]) -> None:
        self.suggested.add(self._record(config))

    # The front it reads is not part of the saved state: the scheduler rebuilds that
    # from the trials.
    def get_state(self) -> dict[str, Any]:
        return {"remaining": self.remaining, "suggested": self.suggested}

    def set_state(self, state: dict[str, Any]) -> None:
        self.remaining, self.suggested = state["remaining"], state["suggested"]


def temperature_key(
    config: dict[str, Any], b_crit: float, resolution: float = 2**0.25, law: str = "sgd"
) -> tuple[Any, ...]:
    """What makes two configurations the same experiment (Smith et al. 2017).

    Below the critical batch size, SGD with momentum behaves like plain SGD at the
    effective rate ε/(1 − m): at one batch size, configurations with equal ε/(1 − m) (to
    `resolution`) and equal warmup give the same noise temperature ε/((1 − m)B) and the
    same steps to the target, so only one of them is run. The rule stops holding at and
    above B_crit, where momentum changes the curvature-limited dynamics, and across batch
    sizes (steps scale with 1/B there): those are always distinct. It is an SGD rule: for
    Adam (`law` "adam") every configuration is its own experiment.
    """
    batch_size = int(config[keys.BATCH_SIZE])
    momentum = float(config.get(keys.MOMENTUM, 0.0))
    lr = float(config[keys.LR])
    warmup = int(config.get(keys.WARMUP_STEPS, 0))
    recipe = tuple(config.get(name) for name in (keys.WEIGHT_DECAY, keys.BETA2, keys.SCHEDULE))
    if law != "sgd" or not batch_size < b_crit:
        return (batch_size, lr, momentum, warmup, *recipe)
    effective = lr / (1.0 - momentum)
    return (batch_size, round(math.log(effective) / math.log(resolution)), warmup, *recipe)


def _snap(lr: float, dim: Any) -> float:
    """An lr inside the spec's lr dimension: clipped to a range, nearest listed value."""
    if dim.categorical:
        return float(min(dim.points(), key=lambda v: abs(math.log(float(v) / lr))))
    return float(min(max(lr, dim.lo), dim.hi))


class EpsGuidedSearcher(Searcher):
    """`search.algorithm: eps-guided`: once the eps_opt model exists, lr is drawn around
    its prediction, rate = ε_opt(B)·exp(N(0, σ²)) with σ = ln(tolerance)/2 (so about 95%
    of draws fall inside the pruner's tolerance; the lr is rate·(1 − m) for SGD, the rate
    itself for Adam); before that, from the spec's lr dimension. Batch size, momentum and
    warmup are drawn from the space. Configurations equivalent by noise temperature below
    B_crit are not run twice (`temperature_key`).
    """

    MAX_REDRAWS = 50
    law = "sgd"  # what one pickled before there were laws reads

    def __init__(self, spec: Spec, state: FrontView) -> None:
        super().__init__(metric=keys.TARGET_VALUE, mode=spec.target.mode)
        self.dims = spec.space.dimensions()
        self.num_samples = spec.search.num_samples
        self.sigma = math.log(spec.pruning.tolerance) / 2
        self.state = state
        self.law = theory.LAW_OF_OPTIMIZER[spec.optimizer]
        self.rng = np.random.default_rng(spec.search.seed)
        self.proposed: list[dict[str, Any]] = []

    def _b_crit(self) -> float:
        """The batch size below which configurations of equal noise temperature count as
        one, from what the fit of the best trials so far finds (`theory.b_crit_finding`):
        B_crit within the batch sizes tried; the lower end of its interval when it lies
        beyond them; 0 when below them (no equivalence); the eps_opt model's B_noise, or
        0, while there are too few batch sizes."""
        best = [r for r in self.state.best.values() if r.steps_to_target > 0]
        finding = theory.b_crit_finding(
            [float(r.batch_size) for r in best], [r.steps_to_target for r in best]
        )
        if finding.kind == "inside":
            return finding.b_crit
        if finding.kind == "beyond" and finding.interval is not None:
            return finding.interval[0]
        if finding.kind == "below":
            return 0.0
        model = self.state.model
        return float(model.b_noise) if model is not None else 0.0

    def _draw(self) -> dict[str, Any]:
        config = {name: draw(dim, self.rng) for name, dim in self.dims.items()}
        model = self.state.model
        if model is not None:
            batch_size = int(config[keys.BATCH_SIZE])
            momentum = float(config.get(keys.MOMENTUM, 0.0))
            predicted = theory.predicted_eps_opt(model, batch_size)
            rate = predicted * math.exp(self.rng.normal(0.0, self.sigma))
            lr = theory.lr_at(self.law, rate, momentum)
            config[keys.LR] = _snap(lr, self.dims[keys.LR])
        return config

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if len(self.proposed) >= self.num_samples:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel
        # Keyed by the B_crit known now: a configuration proposed while B_crit was
        # smaller must still count as run once B_crit has grown past its batch size.
        b_crit = self._b_crit()
        seen = {temperature_key(c, b_crit, law=self.law) for c in self.proposed}
        config = self._draw()
        for _ in range(self.MAX_REDRAWS):
            if temperature_key(config, b_crit, law=self.law) not in seen:
                break
            config = self._draw()
        self.proposed.append(config)
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Nothing to learn here: the eps_opt scheduler keeps the shared state."""

    def get_state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "proposed": self.proposed}

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.proposed = state["proposed"]

    def save(self, checkpoint_path: str) -> None:
        write_pickle(self.get_state(), checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(read_pickle(checkpoint_path))
