"""Search spaces and searchers: the Optuna space, the objective, the searcher, real sweeps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState
from ray import cloudpickle as ray_pickle
from ray.tune.search import ConcurrencyLimiter

from trainables import keys
from tuner.config.spec import Spec, parse_spec
from tuner.runtime.runner import run_sweep, search_plan
from tuner.strategy import search
from tuner.strategy.search import (
    DIVERGED_PENALTY,
    MAX_GAP_PENALTY,
    NoiseTuneOptunaSearch,
    Objective,
)

TARGET = 0.16


def make_spec(tmp_path: Path | None = None, **overrides: Any) -> Spec:
    """A small linear-regression sweep (as tests/test_sweep.py) under Optuna TPE."""
    data: dict[str, Any] = {
        "name": "optuna",
        "workload": "linear_regression",
        "workload_args": {"dim": 16, "noise": 0.5, "n_train": 8192},
        "target": {"metric": "loss", "value": TARGET},
        "budget": {"max_steps": 300},
        "eval_every": 10,
        "space": {"batch_size": [16, 64, 256], "lr": {"log_uniform": [0.02, 4.0]}},
        "search": {"algorithm": "optuna-tpe", "num_samples": 8, "max_concurrent": 2},
        "storage": str((tmp_path or Path(".")) / "runs"),
    }
    data.update(overrides)
    return parse_spec(data)


def limited_searcher(spec: Spec) -> ConcurrencyLimiter:
    """search_algorithm(spec) for an Optuna algorithm: the searcher behind its limiter."""
    alg = search.search_algorithm(spec)
    assert isinstance(alg, ConcurrencyLimiter)
    assert isinstance(alg.searcher, NoiseTuneOptunaSearch)
    return alg


# --- the space ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "dim", "expected"),
    [
        ("batch_size", [16, 64], CategoricalDistribution([16, 64])),
        ("batch_size", {"choice": [32]}, CategoricalDistribution([32])),
        ("batch_size", {"int_uniform": [16, 256]}, IntDistribution(16, 256)),
        ("batch_size", {"log_int_uniform": [16, 4096]}, IntDistribution(16, 4096, log=True)),
        ("lr", [0.1, 0.5], CategoricalDistribution([0.1, 0.5])),
        ("lr", {"uniform": [0.01, 0.5]}, FloatDistribution(0.01, 0.5)),
        ("lr", {"log_uniform": [1e-3, 1.0]}, FloatDistribution(1e-3, 1.0, log=True)),
        ("momentum", {"uniform": [0.0, 0.95]}, FloatDistribution(0.0, 0.95)),
        ("momentum", [0, 0.9], CategoricalDistribution([0, 0.9])),
        ("warmup_steps", {"int_uniform": [0, 100]}, IntDistribution(0, 100)),
        ("warmup_steps", {"log_int_uniform": [1, 100]}, IntDistribution(1, 100, log=True)),
    ],
)
def test_every_dimension_kind_becomes_its_optuna_distribution(
    name: str, dim: Any, expected: BaseDistribution
) -> None:
    space = {"batch_size": [16], "lr": [0.1], name: dim}
    got = search.optuna_space(make_spec(space=space))[name]
    assert got == expected
    if isinstance(got, IntDistribution):  # both bounds can be drawn, as in the spec
        lo, hi = (dim.get("int_uniform") or dim["log_int_uniform"])[:2]
        assert (got.low, got.high) == (lo, hi)
        assert got._contains(got.to_internal_repr(hi)) and got.step == 1


def test_optuna_space_has_all_four_dimensions_with_defaults() -> None:
    space = search.optuna_space(make_spec())
    assert list(space) == list(keys.HYPERPARAMETERS)
    assert space[keys.MOMENTUM] == CategoricalDistribution([0.0])
    assert space[keys.WARMUP_STEPS] == CategoricalDistribution([0])


@pytest.mark.parametrize("algorithm", ["optuna-tpe", "optuna-nsga2"])
def test_optuna_limits_concurrency(algorithm: str) -> None:
    spec = make_spec(search={"algorithm": algorithm, "num_samples": 12, "max_concurrent": 3})
    assert search.expected_trials(spec) == 12
    alg = limited_searcher(spec)
    assert alg.max_concurrent == 3
    assert [alg.suggest(f"t{i}") is not None for i in range(4)] == [True, True, True, False]


@pytest.mark.parametrize("algorithm", ["optuna-tpe", "optuna-nsga2"])
def test_searcher_pickles_after_suggesting(algorithm: str) -> None:
    """Tune pickles the searcher when the sweep starts and at every snapshot (optuna 5.1's
    NSGA-II sampler holds a thread lock, which made every nsga2 sweep crash in Tuner())."""
    alg = limited_searcher(make_spec(search={"algorithm": algorithm, "num_samples": 8}))
    assert alg.suggest("t0") is not None
    copy = ray_pickle.loads(ray_pickle.dumps(alg))
    assert copy.suggest("t1") is not None


def test_random_grid_and_eps_guided_are_built_by_the_search_plan() -> None:
    for algorithm in ("random", "grid"):
        with pytest.raises(ValueError, match="search_plan"):
            search.search_algorithm(make_spec(search={"algorithm": algorithm}))
    guided = make_spec(search={"algorithm": "eps-guided"}, pruning={"kind": "eps_opt"})
    with pytest.raises(ValueError, match="search_plan"):
        search.search_algorithm(guided)


def _proposed(spec: Spec, tmp_path: Path) -> list[tuple[Any, ...]]:
    """Every configuration the sweep's searcher proposes, as sorted tuples."""
    searcher = search_plan(spec, tmp_path).search_alg.searcher
    configs = []
    while (config := searcher.suggest(f"t{len(configs)}")) is not None:
        if config == searcher.FINISHED:
            break
        configs.append(tuple(sorted(config.items())))
    return sorted(configs)


@pytest.mark.parametrize("algorithm", ["random", "grid"])
def test_one_sampler_draws_the_same_configurations_whatever_the_pruning(
    algorithm: str, tmp_path: Path
) -> None:
    """Random (and a grid with a range) draws its candidates once, from search.seed: eps_opt
    and ASHA change the order trials start in and which are stopped, not what is drawn."""
    space = {"batch_size": [16, 64], "lr": {"log_uniform": [0.01, 1.0]}}
    drawn = {
        kind: _proposed(
            make_spec(
                space=space,
                search={"algorithm": algorithm, "num_samples": 6, "seed": 4},
                pruning={"kind": kind},
            ),
            tmp_path,
        )
        for kind in ("none", "asha", "eps_opt")
    }
    assert len(drawn["none"]) == (6 if algorithm == "random" else 12)
    assert drawn["none"] == drawn["asha"] == drawn["eps_opt"]


def test_a_plain_grid_starts_its_points_in_ray_tunes_grid_order(tmp_path: Path) -> None:
    """Without eps_opt a grid proposes its points as Tune's grid search generated them
    (the first dimension fastest), as before noisetune drew them itself."""
    from ray import tune
    from ray.tune.search.variant_generator import generate_variants

    space = {"batch_size": [16, 64], "lr": [0.25, 0.5, 0.02], "momentum": [0.0, 0.9]}
    spec = make_spec(space=space, search={"algorithm": "grid"})
    searcher = search_plan(spec, tmp_path).search_alg.searcher
    proposed = []
    while (config := searcher.suggest(f"t{len(proposed)}")) != searcher.FINISHED:
        proposed.append(tuple(config[name] for name in keys.HYPERPARAMETERS))
    grid = {
        name: tune.grid_search(values) for name, values in {**space, "warmup_steps": [0]}.items()
    }
    tune_order = [
        tuple(c[name] for name in keys.HYPERPARAMETERS) for _, c in generate_variants(grid)
    ]
    assert proposed == tune_order


def test_samplers_are_seeded() -> None:
    def first_configs(seed: int) -> list[dict[str, Any] | None]:
        spec = make_spec(search={"algorithm": "optuna-tpe", "seed": seed, "max_concurrent": 4})
        alg = limited_searcher(spec)
        return [alg.suggest(f"t{i}") for i in range(4)]

    assert first_configs(0) == first_configs(0) != first_configs(1)


# --- the objective ----------------------------------------------------------------------------


def report(status: str, step: int, value: float, batch_size: int = 16) -> dict[str, Any]:
    """A trial's report, as trainables/loop.py writes it."""
    reached = status == keys.REACHED
    return {
        keys.STEP: step,
        keys.EXAMPLES: step * batch_size,
        keys.TARGET_VALUE: value,
        keys.TRIAL_STATUS: status,
        keys.STEPS_TO_TARGET: step if reached else math.nan,
        keys.EXAMPLES_TO_TARGET: step * batch_size if reached else math.nan,
    }


WORST = (math.log(300) + DIVERGED_PENALTY, math.log(300 * 256) + DIVERGED_PENALTY)
L = math.log


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        pytest.param(report(keys.REACHED, 40, 0.15), (L(40), L(640)), id="reached"),
        pytest.param(report(keys.REACHED, 0, 0.1), (0.0, 0.0), id="reached-at-start"),
        pytest.param(
            report(keys.EXHAUSTED, 300, 0.32), (L(300) + L(2), L(4800) + L(2)), id="exhausted"
        ),
        pytest.param(
            report(keys.EXHAUSTED, 300, 0.16), (L(300), L(4800)), id="exhausted-at-target"
        ),
        pytest.param(
            report(keys.EXHAUSTED, 300, 1e6),
            (L(300) + MAX_GAP_PENALTY, L(4800) + MAX_GAP_PENALTY),
            id="exhausted-capped",
        ),
        pytest.param(report(keys.DIVERGED, 20, math.inf), WORST, id="diverged"),
        pytest.param(report(keys.DIVERGED, 20, 5.0), WORST, id="diverged-finite"),
        pytest.param(report(keys.EXHAUSTED, 300, math.nan), WORST, id="exhausted-nan"),
        pytest.param(report(keys.RUNNING, 80, 0.3), None, id="pruned"),
        pytest.param({keys.STEP: 10}, None, id="no-status"),
        pytest.param({}, None, id="no-result"),
        pytest.param(None, None, id="none"),
    ],
)
@pytest.mark.parametrize("multi", [False, True], ids=["tpe", "nsga2"])
def test_objective_values(
    result: dict[str, Any] | None, expected: tuple[float, float] | None, multi: bool
) -> None:
    objective = Objective(target=TARGET, worst=WORST, multi=multi)
    got = objective.values(result)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(list(expected[: 2 if multi else 1]))


def test_objective_from_spec_takes_the_worst_over_the_budget() -> None:
    objective = Objective.from_spec(make_spec())
    assert objective.worst == pytest.approx(WORST)
    assert not objective.multi and objective.tune_metric == keys.STEPS_TO_TARGET
    spec = make_spec(
        budget={"max_steps": 1000, "max_examples": 16000},
        search={"algorithm": "optuna-nsga2"},
    )
    objective = Objective.from_spec(spec)
    # steps: 1000 at B=16; examples: 16000 (1000 x 16, 250 x 64, 62 x 256 = 15872)
    assert objective.worst == pytest.approx(
        (L(1000) + DIVERGED_PENALTY, L(16000) + DIVERGED_PENALTY)
    )
    assert objective.tune_metric == [keys.STEPS_TO_TARGET, keys.EXAMPLES_TO_TARGET]
    assert objective.tune_mode == ["min", "min"]


def test_objective_orders_reached_before_missed_before_diverged() -> None:
    objective = Objective(target=TARGET, worst=WORST)
    ordered = [
        report(keys.REACHED, 100, 0.15),
        report(keys.REACHED, 300, 0.15),
        report(keys.EXHAUSTED, 300, 0.17),
        report(keys.EXHAUSTED, 300, 0.5),
        report(keys.EXHAUSTED, 300, 1e9),
        report(keys.DIVERGED, 10, math.nan),
    ]
    values = [objective.values(r) for r in ordered]
    assert values == sorted(values, key=lambda v: v or [])


@pytest.mark.parametrize(
    ("target", "value", "gap"),
    [(0.16, 0.32, 1.0), (-1.0, -0.5, 0.5), (0.0, 0.25, 0.25), (0.16, 0.1, 0.0)],
)
def test_gap_penalty_is_relative_to_the_target(target: float, value: float, gap: float) -> None:
    objective = Objective(target=target, worst=WORST)
    assert objective.gap_penalty(value) == pytest.approx(math.log1p(gap))


@pytest.mark.parametrize(
    ("target", "value", "gap"), [(0.96, 0.48, 0.5), (0.96, 0.99, 0.0), (-1.0, -1.5, 0.5)]
)
def test_gap_penalty_of_a_target_the_metric_rises_to(
    target: float, value: float, gap: float
) -> None:
    objective = Objective(target=target, worst=WORST, mode="max")
    assert objective.gap_penalty(value) == pytest.approx(math.log1p(gap))


def test_a_stalled_trial_scores_as_if_it_had_spent_its_own_budget() -> None:
    spec = make_spec(budget={"max_steps": 300, "max_examples": 16 * 200})
    objective = Objective.from_spec(spec)  # budget 200 steps at B=16, 12 at B=256
    exhausted = objective.values(report(keys.EXHAUSTED, 200, 0.5))
    stalled = objective.values(report(keys.STALLED, 40, 0.5))
    diverged = objective.values(report(keys.DIVERGED, 10, math.nan))
    assert exhausted is not None and stalled is not None and diverged is not None
    assert exhausted == stalled < diverged  # at B=16 (report's examples / step)
    assert stalled[0] == pytest.approx(L(200) + objective.gap_penalty(0.5))
    at_256 = report(keys.STALLED, 4, 0.5, batch_size=256)
    assert objective.values(at_256) == pytest.approx([L(12) + objective.gap_penalty(0.5)])


def test_running_reports_score_as_if_exhausted_now() -> None:
    objective = Objective(target=TARGET, worst=WORST)
    assert objective.intermediate(report(keys.RUNNING, 80, 0.32)) == pytest.approx(L(80) + L(2))
    assert objective.intermediate(report(keys.RUNNING, 80, 0.2)) < objective.intermediate(
        report(keys.RUNNING, 80, 0.3)
    )


# --- the searcher, fed result dicts without Ray --------------------------------------------


@pytest.mark.parametrize("algorithm", ["optuna-tpe", "optuna-nsga2"])
def test_searcher_tells_complete_pruned_and_fail(algorithm: str) -> None:
    spec = make_spec(search={"algorithm": algorithm, "max_concurrent": 8})
    alg = limited_searcher(spec)
    searcher = alg.searcher
    assert isinstance(searcher, NoiseTuneOptunaSearch)
    finals: dict[str, tuple[dict[str, Any] | None, bool]] = {
        "reached": (report(keys.REACHED, 40, 0.15), False),
        "exhausted": (report(keys.EXHAUSTED, 300, 0.32), False),
        "diverged": (report(keys.DIVERGED, 20, math.inf), False),
        "pruned": (report(keys.RUNNING, 80, 0.3), False),
        "errored": (None, True),
        "errored-after-report": (report(keys.RUNNING, 10, 0.9), True),
    }
    for trial_id, (last, error) in finals.items():
        assert alg.suggest(trial_id) is not None
        alg.on_trial_result(trial_id, report(keys.RUNNING, 0, 1.0))
        if last is not None and last[keys.TRIAL_STATUS] != keys.RUNNING:
            alg.on_trial_result(trial_id, last)  # Tune withholds a report a scheduler stops at
        alg.on_trial_complete(trial_id, result=last, error=error)
    alg.on_trial_complete("reached", result=finals["exhausted"][0])  # a repeat is ignored

    trials = searcher.trials_by_tune_id()
    states = {tid: t.state for tid, t in trials.items()}
    assert states == {
        "reached": TrialState.COMPLETE,
        "exhausted": TrialState.COMPLETE,
        "diverged": TrialState.COMPLETE,
        "pruned": TrialState.PRUNED,
        "errored": TrialState.FAIL,
        "errored-after-report": TrialState.FAIL,
    }
    objective = searcher.objective
    for tid in ("reached", "exhausted", "diverged"):
        assert trials[tid].values == pytest.approx(objective.values(finals[tid][0]))
    assert searcher.study.metric_names == objective.names
    pruned = trials["pruned"].intermediate_values
    if algorithm == "optuna-tpe":  # TPE ranks pruned trials by their last intermediate value
        assert pruned == pytest.approx({0: L(1 / TARGET), 80: L(80) + L(0.3 / TARGET)})
    else:  # Optuna keeps none for several objectives
        assert pruned == {}
        assert len(searcher.study.directions) == 2


def test_searcher_keeps_suggesting_after_pruned_and_failed_trials() -> None:
    alg = limited_searcher(make_spec(search={"algorithm": "optuna-tpe", "num_samples": 8}))
    for i in range(8):  # past TPE's start-up trials (4 here), so the model is used
        assert alg.suggest(f"t{i}") is not None
        last = report([keys.RUNNING, keys.REACHED, keys.EXHAUSTED][i % 3], 10 * (i + 1), 0.15)
        alg.on_trial_complete(f"t{i}", result=last, error=i == 4)
    assert alg.suggest("next") is not None


# --- real sweeps -------------------------------------------------------------------------------


def sweep_with_searcher(
    spec: Spec, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, NoiseTuneOptunaSearch]:
    """Run `spec`, keeping a handle on the searcher the runner builds."""
    made: list[Any] = []
    original = search.search_algorithm

    def keep(spec: Spec) -> Any:
        made.append(original(spec))
        return made[-1]

    monkeypatch.setattr(search, "search_algorithm", keep)
    outcome = run_sweep(spec, progress=False)
    (alg,) = made
    return outcome, alg.searcher


def check_study_matches_table(searcher: NoiseTuneOptunaSearch, trials: pd.DataFrame) -> None:
    by_id = searcher.trials_by_tune_id()
    assert set(by_id) == set(trials["trial_id"])
    expected_state = {
        keys.REACHED: TrialState.COMPLETE,
        keys.EXHAUSTED: TrialState.COMPLETE,
        keys.DIVERGED: TrialState.COMPLETE,
        keys.PRUNED: TrialState.PRUNED,
        keys.ERROR: TrialState.FAIL,
    }
    for row in trials.itertuples():
        frozen = by_id[row.trial_id]
        assert frozen.state == expected_state[row.status], (row.status, frozen)
        assert frozen.params[keys.LR] == pytest.approx(row.lr)
        assert frozen.params[keys.BATCH_SIZE] == row.batch_size
        if row.status == keys.REACHED:
            assert frozen.values[0] == pytest.approx(math.log(max(row.steps_to_target, 1)))


@pytest.mark.ray
def test_optuna_tpe_sweep_writes_final_statuses(
    ray_session: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcome, searcher = sweep_with_searcher(make_spec(tmp_path, name="tpe"), monkeypatch)
    trials = pd.read_parquet(outcome.run_dir / "results" / "trials.parquet")
    assert len(trials) == 8 and not outcome.interrupted
    assert set(trials["status"]) <= {keys.REACHED, keys.EXHAUSTED, keys.DIVERGED}
    assert (trials["status"] == keys.REACHED).any()
    check_study_matches_table(searcher, trials)
    assert len(searcher.study.trials) == 8


@pytest.mark.ray
def test_optuna_nsga2_sweep_runs(
    ray_session: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(tmp_path, name="nsga2", search={"algorithm": "optuna-nsga2", "num_samples": 8})
    outcome, searcher = sweep_with_searcher(spec, monkeypatch)
    trials = outcome.tables.trials
    assert len(trials) == 8 and not outcome.interrupted
    check_study_matches_table(searcher, trials)
    reached = set(trials.loc[trials["status"] == keys.REACHED, "trial_id"])
    by_number = {t.number: tid for tid, t in searcher.trials_by_tune_id().items()}
    front = {by_number[t.number] for t in searcher.study.best_trials}
    assert front and front <= reached  # Optuna's Pareto set: trials that reached the target
    for frozen in searcher.study.best_trials:
        steps, examples = (math.exp(v) for v in frozen.values)
        assert examples == pytest.approx(steps * frozen.params[keys.BATCH_SIZE])


@pytest.mark.ray
def test_asha_stopped_trials_are_pruned_in_the_study(
    ray_session: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(
        tmp_path,
        name="asha",
        space={"batch_size": [16, 64], "lr": {"log_uniform": [0.005, 1.0]}},
        pruning={"kind": "asha", "grace_steps": 20},
        # one at a time: ASHA's decisions then do not depend on which trial reports first
        search={"algorithm": "optuna-tpe", "num_samples": 8, "max_concurrent": 1},
    )
    outcome, searcher = sweep_with_searcher(spec, monkeypatch)
    trials = outcome.tables.trials
    assert len(trials) == 8 and not outcome.interrupted
    pruned = set(trials.loc[trials["status"] == keys.PRUNED, "trial_id"])
    assert pruned, trials[["status", "lr", "batch_size", "steps"]]
    check_study_matches_table(searcher, trials)
    in_study = {tid for tid, t in searcher.trials_by_tune_id().items() if t.state.is_finished()}
    assert in_study == set(trials["trial_id"])
    for tid in pruned:  # each carries its penalised log-steps at the step ASHA stopped it
        frozen = searcher.trials_by_tune_id()[tid]
        stopped_at = int(trials.set_index("trial_id").loc[tid, "steps"])
        assert max(frozen.intermediate_values) == stopped_at
