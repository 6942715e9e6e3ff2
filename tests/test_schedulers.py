"""eps_opt pruning decisions, fed plain records and result dicts (no Ray started)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from trainables import keys
from tuner import theory
from tuner.config.spec import parse_spec
from tuner.strategy.eps_opt_rules import CURVE, FRONT, LR, PruneRule, Stop, decide
from tuner.strategy.records import SweepState, TrialRecord, best_per_batch, fit_model
from tuner.strategy.schedulers import EpsOptScheduler, PerBatchSize, make_scheduler
from tuner.strategy.start_order import (
    Started,
    cold_prediction,
    middle_lrs,
    rate_key,
    start_priority,
)

MODEL = theory.EpsOptFit(eps_max=1.0, b_noise=64.0, rms_log=0.0)  # eps_opt(64) = 0.5
RULE = PruneRule(mode="fitted", tolerance=4.0)


def reason_of(*args: Any, **kwargs: Any) -> str | None:
    """What `decide` says, in words (None: no stop)."""
    stop = decide(*args, **kwargs)
    return None if stop is None else stop.reason


def reached(
    batch_size: int, lr: float, steps: float, momentum: float = 0.0, **extra: float
) -> TrialRecord:
    record = TrialRecord(batch_size, lr, momentum, status=keys.REACHED, step=int(steps))
    record.steps_to_target = steps
    for name, value in extra.items():
        setattr(record, name, value)
    return record


@pytest.mark.parametrize(
    ("lr", "momentum", "step", "expected"),
    [
        (0.5, 0.0, 500, None),  # at the prediction
        (1.9, 0.0, 500, None),  # inside x4
        (0.13, 0.0, 500, None),  # inside /4
        (4.0, 0.0, 0, "pruned: lr 8.0x above eps_opt(B=64)=0.5"),  # judged at the start
        (4.0, 0.0, 100, "pruned: lr 8.0x above eps_opt(B=64)=0.5"),
        (0.05, 0.0, 100, "pruned: lr 10.0x below eps_opt(B=64)=0.5"),
        (0.4, 0.9, 100, "pruned: lr/(1-m) 8.0x above eps_opt(B=64)=0.5"),  # effective 4.0
        (0.05, 0.9, 100, None),  # effective 0.5
    ],
)
def test_lr_rule_uses_the_effective_rate_and_tolerance(
    lr: float, momentum: float, step: int, expected: str | None
) -> None:
    record = TrialRecord(64, lr, momentum, step=step)
    span = {16: reached(16, 0.1, 5000), 256: reached(256, 0.8, 5000)}
    assert reason_of(record, span, MODEL, RULE) == expected


def test_lr_rule_interpolates_and_never_extrapolates() -> None:
    far_off = TrialRecord(64, 8.0, 0.0, step=500)
    assert reason_of(far_off, {}, MODEL, RULE) is None  # no trial reached anywhere yet
    assert reason_of(far_off, {256: reached(256, 0.8, 5000)}, MODEL, RULE) is None
    assert reason_of(
        far_off, {16: reached(16, 0.1, 5000), 1024: reached(1024, 1.0, 5000)}, MODEL, RULE
    )


def test_cold_start_prunes_only_by_the_front() -> None:
    far_off = TrialRecord(64, 100.0, 0.0, step=500)
    assert reason_of(far_off, {}, None, RULE) is None
    best = {64: reached(64, 0.5, 300)}
    assert reason_of(TrialRecord(64, 0.4, 0.0, step=290), best, None, RULE) is None
    reason = reason_of(TrialRecord(64, 0.4, 0.0, step=300), best, None, RULE)
    assert reason is not None and "reached in 300 steps" in reason
    assert reason_of(TrialRecord(16, 0.4, 0.0, step=900), best, None, RULE) is None  # other B


@pytest.mark.parametrize("status", [keys.REACHED, keys.DIVERGED, keys.EXHAUSTED])
def test_trials_that_ended_themselves_are_left_alone(status: str) -> None:
    record = TrialRecord(64, 100.0, 0.0, status=status, step=5000)
    assert reason_of(record, {64: reached(64, 0.5, 10)}, MODEL, RULE) is None


def test_best_per_batch_takes_the_fewest_steps() -> None:
    records = [
        reached(64, 0.5, 300),
        reached(64, 1.0, 200),
        reached(16, 0.2, 900),
        TrialRecord(16, 1, 0),
    ]
    best = best_per_batch(records)
    assert {b: r.steps_to_target for b, r in best.items()} == {64: 200, 16: 900}


def exact_front(
    eps_max: float, b_noise: float, batch_sizes: list[int], **extra: float
) -> list[TrialRecord]:
    """Trials whose best lr is exactly eps_opt(B), plus a worse one per batch size."""
    records = []
    for b in batch_sizes:
        best_lr = float(theory.eps_opt(b, eps_max, b_noise))
        records.append(reached(b, best_lr, 100 * (1 + 50 / b), **extra))
        records.append(reached(b, best_lr * 3, 200 * (1 + 50 / b), **extra))
    return records


def test_fitted_model_recovers_the_law_from_the_best_lrs() -> None:
    model = fit_model(exact_front(2.0, 100.0, [16, 64, 256, 1024]), "fitted")
    assert model is not None
    assert model.eps_max == pytest.approx(2.0, rel=1e-4)
    assert model.b_noise == pytest.approx(100.0, rel=1e-3)
    assert fit_model(exact_front(2.0, 100.0, [64]), "fitted") is None  # one B: no fit yet


def test_calibrated_model_uses_measured_b_noise_and_fits_eps_max() -> None:
    records = exact_front(2.0, 100.0, [64])
    assert fit_model(records, "calibrated") is None  # no B_noise measured: no model
    for record in records:
        record.b_noise_at_target = 100.0
    model = fit_model(records, "calibrated")
    assert model is not None
    assert model.b_noise == pytest.approx(100.0)
    assert model.eps_max == pytest.approx(2.0, rel=1e-9)


def test_measured_model_needs_curvature() -> None:
    records = exact_front(2.0, 100.0, [64, 256])
    assert fit_model(records, "measured") is None
    for record in records:
        record.b_noise_at_target, record.eps_max_at_target = 80.0, 1.5
    model = fit_model(records, "measured")
    assert model is not None and (model.b_noise, model.eps_max) == pytest.approx((80.0, 1.5))


def test_start_priority_nearest_prediction_first_and_spread_before() -> None:
    near, far = TrialRecord(64, 0.55, 0.0), TrialRecord(64, 5.0, 0.0)
    none = Started()
    assert start_priority(near, none, {}, MODEL) < start_priority(far, none, {}, MODEL)
    fresh, busy = TrialRecord(16, 0.1, 0.0), TrialRecord(64, 0.1, 0.0)
    three_at_64 = Started()
    for lr in (1.0, 2.0, 4.0):
        three_at_64.add(TrialRecord(64, lr, 0.0))
    assert start_priority(fresh, three_at_64, {}, None) < start_priority(
        busy, three_at_64, {}, None
    )
    grid = [TrialRecord(64, lr, 0.0) for lr in (0.01, 0.1, 1.0)]
    middle = middle_lrs(grid)
    assert middle[64] == pytest.approx(0.1)
    assert min(grid, key=lambda r: start_priority(r, none, middle, None)).lr == 0.1


def test_a_started_rate_waits_behind_new_rates() -> None:
    """At the prediction's rate, another momentum (same ε/(1 − m)) or warmup ranks
    behind the next untried rate, and behind nothing further than an octave."""
    started = Started()
    started.add(TrialRecord(64, 0.5, 0.0))  # the predicted rate, eps_opt(64) = 0.5
    same_rate = TrialRecord(64, 0.05, 0.9)  # ε/(1 − m) = 0.5
    assert rate_key(same_rate) == rate_key(TrialRecord(64, 0.5, 0.0))
    next_rate, two_octaves = TrialRecord(64, 0.7, 0.0), TrialRecord(64, 2.0, 0.0)
    priority = {
        r.lr: start_priority(r, started, {}, MODEL)[0] for r in (same_rate, next_rate, two_octaves)
    }
    assert priority[0.7] < priority[0.05] < priority[2.0]


def test_the_leaders_momentum_first_at_its_batch_size() -> None:
    """Where the best trial at a batch size used m = 0.9, an untried rate at m = 0 waits
    behind rates at m = 0.9 up to 3/4 of an octave further from the prediction, and
    nothing changes at a batch size without a leader."""
    none = Started()
    best = {64: reached(64, 0.05, 300, momentum=0.9)}  # ε/(1 − m) = 0.5 = eps_opt(64)
    other_momentum = TrialRecord(64, 0.6, 0.0)  # 1.2x the prediction
    leaders_momentum = TrialRecord(64, 0.08, 0.9)  # 1.6x
    too_far = TrialRecord(64, 0.125, 0.9)  # 2.5x
    priority = {
        (r.lr, r.momentum): start_priority(r, none, {}, MODEL, best)[0]
        for r in (other_momentum, leaders_momentum, too_far)
    }
    assert priority[(0.08, 0.9)] < priority[(0.6, 0.0)] < priority[(0.125, 0.9)]
    at_256 = TrialRecord(256, 0.6, 0.0)
    assert start_priority(at_256, none, {}, MODEL, best) == start_priority(at_256, none, {}, MODEL)


def fake_trial(trial_id: str, batch_size: int, lr: float, status: str = Trial.PENDING) -> Any:
    config = {keys.BATCH_SIZE: batch_size, keys.LR: lr, keys.MOMENTUM: 0.0}
    return SimpleNamespace(trial_id=trial_id, config=config, status=status, last_result={})


def result(step: int, status: str = keys.RUNNING, **extra: Any) -> dict[str, Any]:
    return {keys.STEP: step, keys.TRIAL_STATUS: status, keys.STEPS_TO_TARGET: math.nan, **extra}


def test_scheduler_stops_logs_and_delegates(tmp_path: Path) -> None:
    log = tmp_path / "results" / "decisions.jsonl"
    scheduler = EpsOptScheduler(FIFOScheduler(), RULE, max_concurrent=2, decisions_path=log)
    leader, follower = fake_trial("a", 64, 0.5), fake_trial("b", 64, 0.7)
    controller = SimpleNamespace(get_trials=lambda: [leader, follower])
    for trial in (leader, follower):
        scheduler.on_trial_add(controller, trial)
    assert scheduler.on_trial_result(controller, follower, result(100)) == TrialScheduler.CONTINUE
    done = result(150, keys.REACHED, **{keys.STEPS_TO_TARGET: 150, keys.B_SIMPLE: 40.0})
    assert scheduler.on_trial_result(controller, leader, done) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(controller, follower, result(150)) == TrialScheduler.STOP
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines == [{"trial_id": "b", "step": 150, "reason": lines[0]["reason"]}]
    assert "reached in 150 steps" in lines[0]["reason"]
    assert scheduler.state.model is None  # fitted needs reached trials at two batch sizes


def test_choose_trial_starts_in_the_searchers_order_within_concurrency() -> None:
    """The searcher decides the order (it proposes the trial nearest ε_opt first); the
    scheduler starts paused trials first, then pending ones as proposed."""
    scheduler = EpsOptScheduler(FIFOScheduler(), RULE, max_concurrent=1)
    scheduler.state.model = MODEL
    trials = [fake_trial("far", 64, 8.0), fake_trial("near", 64, 0.45), fake_trial("mid", 64, 2.0)]
    controller = SimpleNamespace(get_trials=lambda: trials)
    for trial in trials:
        scheduler.on_trial_add(controller, trial)
    assert scheduler.choose_trial_to_run(controller).trial_id == "far"
    trials[2].status = Trial.PAUSED
    assert scheduler.choose_trial_to_run(controller).trial_id == "mid"
    trials[1].status = Trial.RUNNING
    assert scheduler.choose_trial_to_run(controller) is None  # one at a time


def test_state_keeps_the_best_per_batch_size_and_refits_only_on_reaching() -> None:
    state = SweepState()
    records = {
        name: TrialRecord(b, lr, 0.0)
        for name, b, lr in [("a", 16, 0.1), ("b", 16, 0.2), ("c", 256, 0.8)]
    }
    state.records.update(records)
    state.observe(records["a"], result(400, keys.REACHED, **{keys.STEPS_TO_TARGET: 400}), "fitted")
    assert state.best == {16: records["a"]} and state.model is None  # one batch size
    state.observe(records["b"], result(300, keys.REACHED, **{keys.STEPS_TO_TARGET: 300}), "fitted")
    state.observe(records["c"], result(50, keys.REACHED, **{keys.STEPS_TO_TARGET: 50}), "fitted")
    assert state.best == {16: records["b"], 256: records["c"]}
    assert state.model is not None
    model = state.model
    state.observe(records["c"], result(50, keys.REACHED, **{keys.STEPS_TO_TARGET: 50}), "fitted")
    assert state.model is model and len(state.reached) == 3  # a repeated final report
    assert state.best == best_per_batch(records.values())


def per_batch_scheduler(kind: str, max_steps: int) -> Any:
    """The scheduler `pruning.kind` makes for a two-batch-size sweep, grace 10 steps."""
    spec = parse_spec(
        {
            "name": kind,
            "workload": "linear_regression",
            "target": {"metric": "loss", "value": 0.5},
            "budget": {"max_steps": max_steps},
            "space": {"batch_size": [16, 1024], "lr": [0.1]},
            "pruning": {"kind": kind, "grace_steps": 10},
        }
    )
    return make_scheduler(spec, Path("unused"))


def test_asha_brackets_each_batch_size_on_its_own() -> None:
    """One ASHA across batch sizes stops the small-batch trials (their loss at step t is
    higher); per batch size, a small-batch trial is only compared with its peers."""
    scheduler = per_batch_scheduler("asha", max_steps=400)
    assert isinstance(scheduler, PerBatchSize)
    scheduler.set_search_properties(keys.TARGET_VALUE, "min")
    large = [fake_trial(f"L{i}", 1024, 0.1) for i in range(4)]
    small = fake_trial("S", 16, 0.1)
    controller = SimpleNamespace(get_trials=lambda: [*large, small])
    for trial in [*large, small]:
        scheduler.on_trial_add(controller, trial)
    for i, trial in enumerate(large):  # lower losses than the small batch will ever see
        row = result(10, **{keys.TARGET_VALUE: 0.6 + 0.01 * i})
        scheduler.on_trial_result(controller, trial, row)
    row = result(10, **{keys.TARGET_VALUE: 2.0})
    assert scheduler.on_trial_result(controller, small, row) == TrialScheduler.CONTINUE
    assert set(scheduler.by_batch_size) == {16, 1024}


def test_with_several_seeds_rule_1_compares_with_the_leader_of_the_same_seed() -> None:
    """The best trial of seed 0 must not stop seed 1's run of another configuration: the
    front is the median over seeds of each seed's best."""
    state = SweepState()
    fast = TrialRecord(64, 0.5, 0.0, seed=0)
    state.records["fast"] = fast
    state.observe(fast, result(100, keys.REACHED, **{keys.STEPS_TO_TARGET: 100}), "fitted")
    other_seed, same_seed = TrialRecord(64, 0.4, 0.0, seed=1), TrialRecord(64, 0.4, 0.0, seed=0)
    for record in (other_seed, same_seed):
        record.step = 100
    assert reason_of(other_seed, state.best, None, RULE, state.leaders) is None
    assert reason_of(same_seed, state.best, None, RULE, state.leaders) is not None
    assert state.leaders == {(64, 0): fast} and state.best == {64: fast}


@pytest.mark.parametrize("mode", ["min", "max"])
def test_asha_follows_the_targets_direction(mode: str) -> None:
    spec = parse_spec(
        {
            "name": "asha",
            "workload": "linear_regression",
            "target": {"metric": "loss", "value": 0.5, "mode": mode},
            "budget": {"max_steps": 400},
            "space": {"batch_size": [16], "lr": [0.1]},
            "pruning": {"kind": "asha", "grace_steps": 10},
        }
    )
    scheduler = make_scheduler(spec, Path("unused"))
    assert isinstance(scheduler, PerBatchSize)
    trial = fake_trial("t", 16, 0.1)
    scheduler.on_trial_add(SimpleNamespace(get_trials=lambda: [trial]), trial)
    assert scheduler.by_batch_size[16]._mode == mode


def test_a_trial_that_met_the_target_at_step_0_says_nothing_of_the_lr() -> None:
    front = exact_front(1.0, 64.0, [16, 64, 256])
    at_zero = reached(4096, 1e-6, 0.0)  # any lr meets it before training
    model = fit_model([*front, at_zero], "fitted")
    assert model is not None
    assert model.b_noise == pytest.approx(64.0, rel=1e-3)
    assert model.eps_max == pytest.approx(1.0, rel=1e-3)


# --- Adam's law and front pruning (issue 12) ---------------------------------------------------


def adam_front(batch_sizes: list[int], eps_max: float, b_noise: float) -> list[TrialRecord]:
    """The best AdamW trial per batch size, exactly on the surge law, with steps on
    S(B) = 100(1 + B_noise/B): the law's B_noise is B_crit (Li et al. 2024, Eq. 21)."""
    records = []
    for b in batch_sizes:
        lr = float(theory.eps_opt_adam(b, eps_max, b_noise))
        record = reached(b, lr, 100.0 * (1 + b_noise / b), momentum=0.9)
        record.law = "adam"
        records.append(record)
    return records


def test_adamw_sweeps_fit_the_surge_law_from_their_best_trials() -> None:
    front = adam_front([16, 64, 256, 1024], 3e-3, 200.0)
    model = fit_model(front, "fitted", "adam")
    assert model is not None and model.law == "adam"
    assert model.b_noise == pytest.approx(200.0, rel=1e-6)
    assert model.eps_max == pytest.approx(3e-3, rel=1e-6)
    assert fit_model(front[:1], "fitted", "adam") is None  # one B: no fit yet
    state = SweepState(law="adam")
    for i, record in enumerate(front):
        fresh = state.record(f"t{i}", {keys.BATCH_SIZE: record.batch_size, keys.LR: record.lr})
        assert fresh.law == "adam"
        steps = record.steps_to_target
        report = {keys.TRIAL_STATUS: keys.REACHED, keys.STEP: steps, keys.STEPS_TO_TARGET: steps}
        state.observe(fresh, report, "fitted")
    assert state.model is not None and state.model.b_noise == pytest.approx(200.0, rel=1e-6)


def test_adamw_lr_rule_compares_the_lr_itself() -> None:
    """β1 = 0.9 does not make AdamW's rate ten times its lr, as momentum does for SGD."""
    front = adam_front([16, 64, 256, 1024], 3e-3, 200.0)
    model = fit_model(front, "fitted", "adam")
    best = best_per_batch(front)
    rule = PruneRule(mode="fitted", tolerance=4.0)
    predicted = float(theory.eps_opt_adam(64, 3e-3, 200.0))

    def adam_trial(lr: float) -> TrialRecord:
        return TrialRecord(64, lr, 0.9, step=10, law="adam")

    assert reason_of(adam_trial(predicted), best, model, rule) is None
    assert reason_of(adam_trial(3.5 * predicted), best, model, rule) is None
    reason = reason_of(adam_trial(8 * predicted), best, model, rule)
    assert reason == f"pruned: lr 8.0x above eps_opt(B=64)={predicted:.3g}"
    # Past the peak (B_noise = 200) the law falls (2.2e-3 at B = 1024), but an lr is
    # judged too high only against eps_max there: the fall is bounded by an unknown
    # plateau (Li et al.'s Theorem 4), and measured best lrs often stay near the peak.
    near_peak = TrialRecord(1024, 3.5 * 3e-3, 0.9, step=10, law="adam")  # 4.7x the law
    assert reason_of(near_peak, best, model, rule) is None
    big = TrialRecord(1024, 4.5 * 3e-3, 0.9, step=10, law="adam")
    assert reason_of(big, best, model, rule) == "pruned: lr 4.5x above eps_opt(B=1024)=0.003"
    low = TrialRecord(1024, 2.2e-3 / 4.5, 0.9, step=10, law="adam")  # below: the law itself
    assert reason_of(low, best, model, rule) == "pruned: lr 4.5x below eps_opt(B=1024)=0.00222"


def test_front_pruning_keeps_rule_one_and_drops_the_lr_rule() -> None:
    front_only = PruneRule(mode="fitted", tolerance=4.0, lr_rule=False)
    best = {64: reached(64, 0.5, 300), 16: reached(16, 0.1, 900), 256: reached(256, 0.8, 200)}
    far_off = TrialRecord(64, 100.0, 0.0, step=10)
    assert reason_of(far_off, best, MODEL, RULE) is not None
    assert reason_of(far_off, best, MODEL, front_only) is None
    spent = TrialRecord(64, 100.0, 0.0, step=300)
    assert reason_of(spent, best, MODEL, front_only) == (
        "pruned: at step 300 without reaching the target, which the best trial at B=64 "
        "reached in 300 steps"
    )


def adamw_spec(**sections: Any) -> Any:
    """A small AdamW spec with the given sections."""
    return parse_spec(
        {
            "name": "t",
            "workload": "linear_regression",
            "target": {"metric": "loss", "value": 0.5},
            "budget": {"max_steps": 400},
            "space": "adamw_joint",
            "optimizer": "adamw",
            **sections,
        }
    )


@pytest.mark.parametrize(("kind", "lr_rule"), [("front", False), ("eps_opt", True)])
def test_front_and_eps_opt_kinds_make_the_same_scheduler(kind: str, lr_rule: bool) -> None:
    scheduler = make_scheduler(adamw_spec(pruning={"kind": kind}), Path("unused"))
    assert isinstance(scheduler, EpsOptScheduler) and scheduler.rule.lr_rule is lr_rule


def test_an_optuna_sweep_s_eps_opt_scheduler_uses_the_optimiser_s_law() -> None:
    """No searcher hands it a state: it makes its own, with AdamW's law for adamw."""
    spec = adamw_spec(search={"algorithm": "optuna-tpe"}, pruning={"kind": "eps_opt"})
    scheduler = make_scheduler(spec, Path("unused"))
    assert isinstance(scheduler, EpsOptScheduler) and scheduler.state.law == "adam"


def with_curve(record: TrialRecord, steps: list[float], values: list[float]) -> TrialRecord:
    record.curve_steps, record.curve_values = list(steps), list(values)
    record.step = int(steps[-1])
    return record


def exp_curve(rate: float, last: int, noise: float = 0.0) -> tuple[list[float], list[float]]:
    """Gradient flow at `rate`: exp(−rate·t), reported every 10 steps."""
    steps = [float(s) for s in range(0, last + 1, 10)]
    jitter = [noise * (-1) ** i for i in range(len(steps))]
    return steps, [math.exp(-rate * s) + j for s, j in zip(steps, jitter, strict=True)]


def test_curve_rule_stops_a_trial_lagging_the_leader_past_the_allowed_lag() -> None:
    """The leader (rate 0.01) reached the target in 400 steps. A trial at rate 0.0025
    (4x slower: its lag is 4 > 3) is stopped once past 1/4 of 400 steps; one at 0.005
    (lag 2) is left to run, as is every trial before step 100."""
    leader = reached(64, 0.5, 400)
    with_curve(leader, *exp_curve(0.01, 400))
    best = {64: leader}
    slow = with_curve(TrialRecord(64, 0.1, 0.0), *exp_curve(0.0025, 100))
    stop = decide(slow, best, None, RULE)
    assert stop == Stop(CURVE, stop.reason if stop else "") and stop is not None
    assert stop.informative and "4.0x sooner" in stop.reason
    early = with_curve(TrialRecord(64, 0.1, 0.0), *exp_curve(0.0025, 90))
    assert decide(early, best, None, RULE) is None
    behind_by_two = with_curve(TrialRecord(64, 0.2, 0.0), *exp_curve(0.005, 300))
    assert decide(behind_by_two, best, None, RULE) is None
    off = PruneRule(mode="fitted", curve_lag=math.inf)
    assert decide(slow, best, None, off) is None


def test_curve_rule_takes_the_noise_between_runs_off_the_gap() -> None:
    """The same 4x-slower trial, its reports jittering by ±0.1: the margin (z·√2·σ) is
    then larger than the gap, and it runs on."""
    leader = with_curve(reached(64, 0.5, 400), *exp_curve(0.01, 400, noise=0.1))
    slow = with_curve(TrialRecord(64, 0.1, 0.0), *exp_curve(0.0025, 100, noise=0.1))
    assert decide(slow, {64: leader}, None, RULE) is None


AT_BOUND = theory.EpsOptFit(eps_max=1.0, b_noise=64.0, rms_log=0.0, at_bound=True)


def test_lr_rule_on_a_fit_at_a_bound_waits_for_a_bracket() -> None:
    """A fit at a bound of B_noise only confirms where the first trials ran: far from its
    prediction, a trial is pruned only at batch sizes whose best rate is bracketed."""
    far_off = TrialRecord(64, 8.0, 0.0, step=10)
    span = {16: reached(16, 0.1, 5000), 256: reached(256, 0.8, 5000)}
    assert reason_of(far_off, span, AT_BOUND, RULE) is None
    assert reason_of(far_off, span, AT_BOUND, RULE, bracketed=lambda b: b == 64) is not None
    assert reason_of(far_off, span, MODEL, RULE) is not None  # not at a bound: as before
    stop = decide(far_off, span, MODEL, RULE)
    assert stop is not None and stop.rule == LR and not stop.informative


def test_state_brackets_a_batch_size_from_informative_ends_only() -> None:
    state = SweepState()
    best, low = state.record("a", cfg(64, 0.5)), state.record("b", cfg(64, 0.1))
    far = state.record("c", cfg(64, 4.0))
    assert state.open_at(64) == 3
    state.observe(best, result(300, keys.REACHED, **{keys.STEPS_TO_TARGET: 300}), "fitted")
    state.observe(low, result(300), "fitted")
    state.stopped(low, informative=True)  # lost to the leader: rule 1
    state.stopped(far, informative=False)  # pruned by the lr rule from its configuration
    assert not state.bracketed(64) and state.open_at(64) == 0
    higher = state.record("d", cfg(64, 1.0))
    state.observe(higher, result(20, keys.DIVERGED), "fitted")
    assert state.bracketed(64) and state.rate_span[64] == (0.1, 1.0)
    state.observe(low, result(310, keys.RUNNING), "fitted")  # a stopped trial's last report
    assert low.status == keys.PRUNED


def cfg(batch_size: int, lr: float) -> dict[str, Any]:
    return {keys.BATCH_SIZE: batch_size, keys.LR: lr, keys.MOMENTUM: 0.0}


def test_start_order_waits_at_a_batch_size_racing_without_a_leader() -> None:
    """With a model, a trial at a batch size where one is under way and none has reached
    the target ranks behind a rate 3x off the prediction at another batch size."""
    none = Started()
    busy, free = TrialRecord(64, 0.5, 0.0), TrialRecord(256, 0.8 * 3, 0.0)
    open_at = {64: 1}.get
    assert start_priority(busy, none, {}, MODEL, {}, lambda b: open_at(b, 0)) > start_priority(
        free, none, {}, MODEL, {}, lambda b: open_at(b, 0)
    )
    leader = {64: reached(64, 0.5, 300)}  # once there is a leader, no wait
    assert start_priority(busy, none, {}, MODEL, leader, lambda b: 1)[0] == pytest.approx(0.0)


@pytest.mark.parametrize(("law", "expected"), [("sgd", 0.2), ("adam", 0.1 * 2**0.5)])
def test_cold_start_guesses_halfway_between_the_laws_ends(law: str, expected: float) -> None:
    """From the best trial at B₀ = 16 (rate 0.1), at B = 64 SGD's optimum lies between 0.1
    and 0.4 (ε ∝ B far below B_noise): the guess is 0.2; Adam's between 0.1 and 0.2
    (√B): 0.141."""
    best = {16: reached(16, 0.1, 300), 1024: reached(1024, 1.0, 30)}
    best[16].law = best[1024].law = law
    record = TrialRecord(64, 0.3, 0.0, law=law)
    assert cold_prediction(record, best) == pytest.approx(expected)
    assert cold_prediction(record, {}) is None


def test_start_order_learns_the_law_where_trials_are_cheap() -> None:
    """At equal distance from the prediction, a trial at 4x the smallest batch size ranks
    ln 4 nats later (its examples grow as B·S(B)); before a model, as if 2 more trials
    had started there."""
    middle = {16: 0.1, 64: 0.2}
    none = Started()
    small = TrialRecord(16, theory.predicted_eps_opt(MODEL, 16), 0.0)
    large = TrialRecord(64, theory.predicted_eps_opt(MODEL, 64), 0.0)
    assert start_priority(small, none, middle, MODEL)[0] == pytest.approx(0.0)
    assert start_priority(large, none, middle, MODEL)[0] == pytest.approx(math.log(4.0))
    assert start_priority(TrialRecord(64, 0.2, 0.0), none, middle, None)[0] == 2.0


def test_hyperband_is_asha_with_three_brackets_per_batch_size() -> None:
    """Bracket k's first rung is grace·4^k: a trial of the last bracket is first judged
    at 16× the grace steps."""
    scheduler = per_batch_scheduler("hyperband", max_steps=2000)
    assert isinstance(scheduler, PerBatchSize)
    trials = [fake_trial(f"t{i}", 16, 0.1) for i in range(3)]
    controller = SimpleNamespace(get_trials=lambda: trials)
    for trial in trials:
        scheduler.on_trial_add(controller, trial)
    asha = scheduler.by_batch_size[16]
    assert isinstance(asha, ASHAScheduler)
    first_rungs = sorted(min(milestone for milestone, _ in b._rungs) for b in asha._brackets)
    assert first_rungs == [10, 40, 160]


def test_scheduler_counts_trials_through_stops_errors_retries_resumes_and_removals() -> None:
    """The open count per batch size (the start order's wait) and the bracket follow
    every way a trial ends or comes back."""
    scheduler = EpsOptScheduler(FIFOScheduler(), RULE, max_concurrent=2)
    state = scheduler.state
    leader, lost, broken = (
        fake_trial("a", 64, 0.5),
        fake_trial("b", 64, 0.1),
        fake_trial("c", 64, 2.0),
    )
    controller = SimpleNamespace(get_trials=lambda: [leader, lost, broken])
    for trial in (leader, lost, broken):
        scheduler.on_trial_add(controller, trial)
    assert state.open_at(64) == 3
    done = result(300, keys.REACHED, **{keys.STEPS_TO_TARGET: 300})
    scheduler.on_trial_result(controller, leader, done)
    scheduler.on_trial_complete(controller, leader, done)
    assert scheduler.on_trial_result(controller, lost, result(300)) == TrialScheduler.STOP
    scheduler.on_trial_complete(controller, lost, result(300))  # its last report: "running"
    assert lost.trial_id in state.records and state.records["b"].status == keys.PRUNED
    scheduler.on_trial_error(controller, broken)
    assert state.open_at(64) == 0 and not state.bracketed(64)
    scheduler.on_trial_add(controller, broken)  # Tune retries it (max_failures)
    assert state.open_at(64) == 1 and state.records["c"].status == keys.RUNNING
    scheduler.on_trial_result(controller, broken, result(20, keys.DIVERGED))
    assert state.open_at(64) == 0 and state.bracketed(64)  # 0.1 lost, 2.0 diverged
    pending = fake_trial("d", 64, 0.7)
    scheduler.on_trial_add(controller, pending)
    scheduler.on_trial_remove(controller, pending)
    assert state.open_at(64) == 0


def test_a_resumed_sweep_counts_its_ended_trials_as_ended() -> None:
    """On resume Tune adds every trial again; one this scheduler had stopped still reports
    "running" and is TERMINATED: it must not count as under way."""
    scheduler = EpsOptScheduler(FIFOScheduler(), RULE, max_concurrent=2)
    stopped = fake_trial("a", 64, 0.1, status=Trial.TERMINATED)
    stopped.last_result = result(300)
    running = fake_trial("b", 64, 0.5, status=Trial.PENDING)
    controller = SimpleNamespace(get_trials=lambda: [stopped, running])
    for trial in (stopped, running):
        scheduler.on_trial_add(controller, trial)
    assert scheduler.state.open_at(64) == 1
    assert scheduler.state.records["a"].status == keys.PRUNED


def test_a_sweep_state_pickled_before_the_bracket_reads_its_defaults() -> None:
    import pickle

    state = SweepState(law="adam")
    for name in ("rate_span", "open", "target_mode"):
        del state.__dict__[name]
    restored = pickle.loads(pickle.dumps(state))
    assert restored.law == "adam" and restored.target_mode == "min"
    restored.record("a", cfg(64, 0.1))
    assert restored.open_at(64) == 1


def test_curve_rule_follows_a_target_the_metric_rises_to() -> None:
    """Accuracy rising as 1 − exp(−rate·t): the 4x slower trial is stopped, as for a loss."""
    state = SweepState(target_mode="max")
    leader, slow = state.record("a", cfg(64, 0.5)), state.record("b", cfg(64, 0.1))
    for step, value in zip(*exp_curve(0.01, 400), strict=True):
        status = keys.REACHED if step == 400 else keys.RUNNING
        extra = {keys.STEPS_TO_TARGET: 400.0} if step == 400 else {}
        state.observe(
            leader, result(int(step), status, **{keys.TARGET_VALUE: 1 - value, **extra}), "fitted"
        )
    for step, value in zip(*exp_curve(0.0025, 100), strict=True):
        state.observe(slow, result(int(step), **{keys.TARGET_VALUE: 1 - value}), "fitted")
    stop = decide(slow, state.best, None, RULE)
    assert stop is not None and stop.rule == CURVE


def test_a_trial_slower_than_a_smaller_batch_size_is_stopped() -> None:
    """S(B) does not rise with B: at B = 256 a trial that has taken twice the 60 steps B = 64
    needed (and no leader at 256 yet) is stopped; one at 119 steps, or at B = 16, is not."""
    best = {64: reached(64, 0.5, 60)}
    stop = decide(TrialRecord(256, 1.0, 0.0, step=120), best, None, RULE)
    assert stop is not None and stop.rule == FRONT and stop.informative
    assert "2x the steps a smaller batch size needed (60)" in stop.reason
    assert decide(TrialRecord(256, 1.0, 0.0, step=119), best, None, RULE) is None
    assert decide(TrialRecord(16, 0.1, 0.0, step=500), best, None, RULE) is None
    off = PruneRule(mode="fitted", larger_batch_slack=math.inf)
    assert decide(TrialRecord(256, 1.0, 0.0, step=120), best, None, off) is None
