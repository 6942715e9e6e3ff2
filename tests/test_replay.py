"""The tabular replay behind bench/search_efficiency.py, on hand-made curves."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from _helpers import recorded_curve
from heldout import HeldOut
from replay import Curves, replay

from trainables import keys


def curve(batch_size: int, lr: float, reached_at: int | None, last: int = 100) -> list[dict]:
    """Reports every 10 steps, 1 s apart, reaching the target at `reached_at`."""
    return recorded_curve(batch_size, lr, reached_at, last, lambda step: 1.0 / (1 + step), 0.1)


CURVES = Curves(
    pd.DataFrame(
        curve(16, 0.1, 60) + curve(16, 1.0, None) + curve(64, 0.1, 30) + curve(64, 1.0, 50)
    )
)
CONFIGS = [
    {keys.BATCH_SIZE: b, keys.LR: lr, keys.MOMENTUM: 0.0, keys.WARMUP_STEPS: 0}
    for b, lr in [(16, 1.0), (64, 1.0), (16, 0.1), (64, 0.1)]
]


def suggest_in_order(configs: list[dict[str, Any]]) -> Any:
    queue = list(configs)
    return lambda _trial_id: queue.pop(0) if queue else None


def test_the_grid_spends_every_recorded_step_and_finds_the_front() -> None:
    assert CURVES.best_steps() == {16: 60.0, 64: 30.0}
    assert CURVES.total_examples() == 16 * (60 + 100) + 64 * (30 + 50)
    outcome = replay(CURVES, suggest_in_order(CONFIGS), FIFOScheduler(), concurrency=1)
    assert outcome.trials == 4
    assert outcome.total_examples == CURVES.total_examples()
    assert outcome.front == {16: 60.0, 64: 30.0}
    assert outcome.picks == {16: (16, 0.1, 0.0, 0), 64: (64, 0.1, 0.0, 0)}
    # One at a time, the front is complete when the last trial reports its target.
    assert outcome.examples_to_front == CURVES.total_examples()
    assert outcome.makespan_s == pytest.approx(10 + 5 + 6 + 3)


def test_a_stop_ends_the_trial_at_that_report_and_frees_the_slot() -> None:
    class StopAtStep20(FIFOScheduler):
        def on_trial_result(self, controller: Any, trial: Any, result: dict) -> str:
            return TrialScheduler.STOP if result[keys.STEP] >= 20 else TrialScheduler.CONTINUE

    outcome = replay(CURVES, suggest_in_order(CONFIGS), StopAtStep20(), concurrency=2)
    assert outcome.total_examples == 20 * (16 + 64 + 16 + 64)
    assert outcome.front == {}
    assert math.isinf(outcome.examples_to_front)


def test_running_trials_count_their_progress_when_the_front_is_found() -> None:
    """Two at a time: (64, 0.1) reaches at step 30 (t = 3 s) and completes the front
    with (16, 0.1), which reached earlier; the trial beside it has run 3 s as well."""
    order = [CONFIGS[2], CONFIGS[0], CONFIGS[3], CONFIGS[1]]
    outcome = replay(CURVES, suggest_in_order(order), FIFOScheduler(), concurrency=2)
    # t=6: (16, 0.1) reached (960 examples); (16, 1.0) ran to step 60 (960).
    # (64, 0.1) starts at t=6, reaches at t=9: 30*64; (16, 1.0) by then at step 90.
    assert outcome.wall_to_front_s == pytest.approx(9.0)
    assert outcome.examples_to_front == pytest.approx(16 * 60 + 16 * 90 + 64 * 30)


def test_recorded_curves_are_reused_only_for_the_spec_they_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/curves.py keys its recordings by spec name; one recorded from an edited spec
    under the same name (another grid, workload or target) is recorded again."""
    import curves

    from tuner.config.spec import parse_spec

    monkeypatch.setattr(curves, "CURVES_DIR", tmp_path)
    recorded: list[str] = []

    def record(spec: Any, processes: int, seed: int = 0) -> pd.DataFrame:
        recorded.append(spec.target.model_dump_json())
        return pd.DataFrame([curve(16, 0.1, 20)[-1]])

    monkeypatch.setattr(curves, "record", record)
    base: dict[str, Any] = {
        "name": "same-name",
        "workload": "linear_regression",
        "target": {"metric": "loss", "value": 0.5},
        "budget": {"max_steps": 100},
        "space": {"batch_size": [16], "lr": [0.1]},
        "search": {"algorithm": "grid"},
    }
    first = curves.load_or_record(parse_spec(base), 1)
    # A different storage, pruning or name of the search algorithm trains the same curves.
    same = {**base, "storage": "/elsewhere", "pruning": {"kind": "asha"}}
    pd.testing.assert_frame_equal(curves.load_or_record(parse_spec(same), 1), first)
    assert len(recorded) == 1
    edited = {**base, "target": {"metric": "loss", "value": 0.4}}
    curves.load_or_record(parse_spec(edited), 1)
    assert len(recorded) == 2
    assert curves.recorded_recipe(tmp_path / "same-name.parquet") == curves.recipe(
        parse_spec(edited)
    )


def test_held_out_regret_scores_a_pick_by_its_mean_steps_on_other_seeds() -> None:
    """Seed 1: (16, 0.1) 80 steps, (16, 1.0) never (counts the 200-step budget), (64, 0.1)
    40, (64, 1.0) 20; seed 2: 40, 100, 40, 60. Means: B=16 60 vs 150, B=64 40 vs 40. At
    B = 256 nothing reaches: not scored."""
    seeds = [
        Curves(
            pd.DataFrame(
                curve(16, 0.1, 80)
                + curve(16, 1.0, None)
                + curve(64, 0.1, 40)
                + curve(64, 1.0, 20)
                + curve(256, 0.1, None)
            )
        ),
        Curves(
            pd.DataFrame(
                curve(16, 0.1, 40)
                + curve(16, 1.0, 100)
                + curve(64, 0.1, 40)
                + curve(64, 1.0, 60)
                + curve(256, 0.1, None)
            )
        ),
    ]
    heldout = HeldOut(seeds, budget_steps=200)
    assert heldout.best == {16: 60.0, 64: 40.0}
    assert heldout.regret({16: (16, 0.1, 0.0, 0), 64: (64, 1.0, 0.0, 0)}) == 1.0
    assert heldout.regret({16: (16, 1.0, 0.0, 0), 64: (64, 0.1, 0.0, 0)}) == 150 / 60
    assert math.isinf(heldout.regret({64: (64, 0.1, 0.0, 0)}))
    with pytest.raises(ValueError, match="at least one held-out seed"):
        HeldOut([], budget_steps=200)


def test_a_held_out_seed_is_the_same_grid_trained_with_another_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/curves.py records training seed 1 with the real loop beside seed 0, once."""
    import curves

    from tuner.config.spec import parse_spec

    monkeypatch.setattr(curves, "CURVES_DIR", tmp_path)
    spec = parse_spec(
        {
            "name": "seeded",
            "workload": "linear_regression",
            "target": {"metric": "loss", "value": 0.0},  # never reached: every step recorded
            "budget": {"max_steps": 20},
            "eval_every": 10,
            "space": {"batch_size": [16], "lr": [0.05]},
            "search": {"algorithm": "grid"},
        }
    )
    seed0 = curves.load_or_record(spec, 1, seed=0)
    seed1 = curves.load_or_record(spec, 1, seed=1)
    assert curves.seed_path(spec, 1) == tmp_path / "seeded-seed1.parquet"
    assert list(seed1[keys.STEP]) == list(seed0[keys.STEP]) == [0, 10, 20]
    assert not seed1[keys.LOSS].equals(seed0[keys.LOSS])  # other batches, other init
    monkeypatch.setattr(curves, "record", lambda *_: pytest.fail("recorded twice"))
    pd.testing.assert_frame_equal(curves.load_or_record(spec, 1, seed=1), seed1)
