"""The candidates an eps_opt sweep runs, and the order the guided searcher proposes them."""

from __future__ import annotations

from typing import Any

import pytest
from ray.tune.search import Searcher

from trainables import keys
from tuner import theory
from tuner.config.spec import parse_spec
from tuner.strategy.candidates import draw_candidates
from tuner.strategy.guided import EpsGuidedSearcher, GuidedCandidates, temperature_key
from tuner.strategy.records import SweepState

BASE: dict[str, Any] = {
    "name": "g",
    "workload": "linear_regression",
    "target": {"metric": "loss", "value": 0.2},
    "budget": {"max_steps": 100},
    "space": {
        "batch_size": [16, 256],
        "lr": [0.01, 0.1, 1.0],
        "momentum": [0.0],
        "warmup_steps": {"int_uniform": [0, 10]},
    },
    "search": {"algorithm": "grid", "num_samples": 2, "seed": 3},
    "pruning": {"kind": "eps_opt"},
}


def test_grid_candidates_cover_the_grid_and_draw_ranges_reproducibly() -> None:
    spec = parse_spec(BASE)
    configs = draw_candidates(spec)
    assert len(configs) == 2 * 3 * 2  # batch x lr x num_samples
    assert sorted({(c[keys.BATCH_SIZE], c[keys.LR]) for c in configs}) == sorted(
        (b, lr) for b in (16, 256) for lr in (0.01, 0.1, 1.0)
    )
    assert all(0 <= c[keys.WARMUP_STEPS] <= 10 for c in configs)
    assert draw_candidates(spec) == configs


@pytest.mark.parametrize(
    ("dim", "low", "high"),
    [
        ({"log_uniform": [0.001, 1.0]}, 0.001, 1.0),
        ({"uniform": [0.2, 0.4]}, 0.2, 0.4),
    ],
)
def test_random_candidates_stay_in_their_ranges(
    dim: dict[str, Any], low: float, high: float
) -> None:
    spec = parse_spec(
        {
            **BASE,
            "space": {"batch_size": {"log_int_uniform": [8, 512]}, "lr": dim},
            "search": {"algorithm": "random", "num_samples": 50, "seed": 0},
        }
    )
    configs = draw_candidates(spec)
    assert len(configs) == 50
    assert all(low <= c[keys.LR] <= high for c in configs)
    assert all(8 <= c[keys.BATCH_SIZE] <= 512 for c in configs)


def test_guided_order_learns_at_small_batch_sizes_first_then_follows_the_model() -> None:
    configs = [
        {keys.BATCH_SIZE: b, keys.LR: lr, keys.MOMENTUM: 0.0, keys.WARMUP_STEPS: 0}
        for b in (16, 256)
        for lr in (0.01, 0.1, 0.5, 1.0)
    ]
    state = SweepState()
    searcher = GuidedCandidates(configs, state)
    # Before a model: the middle lr (0.1) first; B = 256 is 4 octaves up, so it counts as
    # if 4 trials had started there, and B = 16 gets its second trial first.
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert (first[keys.BATCH_SIZE], first[keys.LR]) == (16, 0.1)  # type: ignore[index]
    assert (second[keys.BATCH_SIZE], second[keys.LR]) == (16, 0.5)  # type: ignore[index]
    state.model = theory.EpsOptFit(eps_max=1.0, b_noise=16.0, rms_log=0.0)  # eps_opt(256) ~ 0.94
    # With one: B = 16's lr 1.0 (an octave from eps_opt(16) = 0.5) costs less than
    # B = 256's nearest (lr 1.0, 16x the examples per step: ln 16 = 2.8 nats), which
    # comes before B = 16's lr 0.01 (5.6 octaves off).
    third, fourth = searcher.suggest("c"), searcher.suggest("d")
    assert (third[keys.BATCH_SIZE], third[keys.LR]) == (16, 1.0)  # type: ignore[index]
    assert fourth == {**configs[7]}  # B=256, lr 1.0
    for name in "efgh":
        assert searcher.suggest(name) is not None
    assert searcher.suggest("i") == Searcher.FINISHED


def config(batch_size: int, lr: float, momentum: float = 0.0, warmup: int = 0) -> dict[str, Any]:
    return {
        keys.BATCH_SIZE: batch_size,
        keys.LR: lr,
        keys.MOMENTUM: momentum,
        keys.WARMUP_STEPS: warmup,
    }


@pytest.mark.parametrize(
    ("a", "b", "b_crit", "same"),
    [
        (config(64, 0.1), config(64, 0.01, 0.9), 500.0, True),  # equal lr/(1-m) below B_crit
        (config(64, 0.1), config(64, 0.01, 0.9), 32.0, False),  # at/above B_crit: distinct
        (config(64, 0.1), config(128, 0.1), 500.0, False),  # never across batch sizes
        (config(64, 0.1), config(64, 0.1, warmup=50), 500.0, False),
        (config(64, 0.1), config(64, 0.105), 500.0, True),  # within the 2^0.25 resolution
        (config(64, 0.1), config(64, 0.2), 500.0, False),
    ],
)
def test_temperature_key(a: dict[str, Any], b: dict[str, Any], b_crit: float, same: bool) -> None:
    assert (temperature_key(a, b_crit) == temperature_key(b, b_crit)) is same


def guided_spec(**search: Any) -> Any:
    return parse_spec(
        {
            **BASE,
            "space": {
                "batch_size": [16, 256],
                "lr": {"log_uniform": [0.001, 10.0]},
                "momentum": [0.0, 0.9],
            },
            "search": {"algorithm": "eps-guided", "num_samples": 200, "seed": 1, **search},
            "pruning": {"kind": "eps_opt", "tolerance": 4.0},
        }
    )


def test_eps_guided_draws_around_the_prediction_once_there_is_a_model() -> None:
    state = SweepState()
    searcher = EpsGuidedSearcher(guided_spec(), state)
    before = [searcher.suggest(str(i)) for i in range(40)]
    spread = max(c[keys.LR] for c in before) / min(c[keys.LR] for c in before)  # type: ignore[index]
    assert spread > 100  # the spec's log-uniform range
    state.model = theory.EpsOptFit(eps_max=1.0, b_noise=64.0, rms_log=0.0)
    after = [searcher.suggest(str(i)) for i in range(40, 200)]
    ratios = [
        c[keys.LR] / (1 - c[keys.MOMENTUM]) / theory.eps_opt(c[keys.BATCH_SIZE], 1.0, 64.0)  # type: ignore[index]
        for c in after
    ]
    inside = sum(1 / 4 <= r <= 4 for r in ratios) / len(ratios)
    assert inside > 0.85
    assert searcher.suggest("last") == Searcher.FINISHED


def test_eps_guided_does_not_repeat_a_config_once_b_crit_has_grown_past_it() -> None:
    """A configuration proposed while B_crit was below its batch size (keyed exactly)
    is still the same experiment once B_crit has grown (keyed by noise temperature)."""
    state = SweepState()
    searcher = EpsGuidedSearcher(guided_spec(), state)
    first = {keys.BATCH_SIZE: 256, keys.LR: 0.1, keys.MOMENTUM: 0.0, keys.WARMUP_STEPS: 0}
    other = {**first, keys.LR: 0.4}
    draws = iter([first, first, other])
    searcher._draw = lambda: dict(next(draws))  # type: ignore[method-assign]
    assert searcher.suggest("0") == first  # B_crit unknown (0): 256 is above it
    state.model = theory.EpsOptFit(eps_max=1.0, b_noise=4096.0, rms_log=0.0)
    assert searcher._b_crit() > 256
    assert searcher.suggest("1") == other  # `first` again is redrawn


def test_an_eps_guided_searcher_pickled_before_laws_still_proposes() -> None:
    """Tune restores the searcher object itself: one saved before it had a law reads SGD's."""
    import pickle

    searcher = EpsGuidedSearcher(guided_spec(), SweepState())
    del searcher.__dict__["law"]
    restored = pickle.loads(pickle.dumps(searcher))
    assert restored.law == "sgd" and restored.suggest("0") is not None


def test_eps_guided_needs_eps_opt_pruning() -> None:
    from tuner.config.spec import SpecError

    with pytest.raises(SpecError, match="eps-guided"):
        parse_spec({**BASE, "search": {"algorithm": "eps-guided"}, "pruning": {"kind": "none"}})
