"""SGD-SaI (trainables.parts.sgd_sai): the frozen g-SNR scales and the update against
their closed forms, the state a checkpoint carries, and a trial that trains with it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainables import keys
from trainables.loop import run_trial
from trainables.parts.sgd_sai import SGDSaI
from trainables.settings import Hyperparameters
from tuner.config.spec import parse_spec
from tuner.config.trial_settings import trial_settings

EPS = 1e-8


def gsnr_closed_form(g: np.ndarray) -> float:
    """‖g‖₂ / (std(g) + eps), the std unbiased as torch's."""
    return float(np.linalg.norm(g) / (np.std(g, ddof=1) + EPS))


def params_with(*grads: np.ndarray) -> list[torch.nn.Parameter]:
    """Parameters (ones, float64) of the gradients' shapes, each holding its gradient."""
    params = [torch.nn.Parameter(torch.ones(g.shape, dtype=torch.float64)) for g in grads]
    set_grads(params, *grads)
    return params


def set_grads(params: list[torch.nn.Parameter], *grads: np.ndarray | None) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = None if g is None else torch.tensor(g, dtype=torch.float64)


G1 = np.array([1.0, 2.0, 3.0, 4.0])  # gsnr √30/√(5/3) = √18
G2 = np.array([[1.0, -1.0], [3.0, -3.0]])  # mean 0: gsnr √20/√(20/3) = √3


def test_the_scale_is_the_norm_over_the_std_relative_to_the_largest() -> None:
    params = params_with(G1, G2)
    opt = SGDSaI(params, lr=0.0, momentum=0.9, weight_decay=0.0)
    opt.step()
    snr = [gsnr_closed_form(G1), gsnr_closed_form(G2)]
    assert snr == pytest.approx([np.sqrt(18.0), np.sqrt(3.0)], rel=1e-7)
    assert [opt.state[p]["gsnr"] for p in params] == pytest.approx(snr, rel=1e-6)
    assert [opt.state[p]["scale"] for p in params] == pytest.approx(
        [1.0, snr[1] / snr[0]], rel=1e-6
    )
    assert opt.gsnr_max() == pytest.approx(snr[0], rel=1e-6)


def test_a_one_entry_tensor_has_std_zero_so_its_gsnr_is_its_gradient_over_eps() -> None:
    """The reference's `std().nan_to_num()`: such a tensor takes the largest scale."""
    params = params_with(G1, np.array([2.0]))
    opt = SGDSaI(params, lr=0.0, momentum=0.0, weight_decay=0.0)
    opt.step()
    assert opt.state[params[1]]["gsnr"] == pytest.approx(2.0 / EPS)
    assert opt.state[params[1]]["scale"] == 1.0
    assert opt.state[params[0]]["scale"] == pytest.approx(np.sqrt(18.0) * EPS / 2.0, rel=1e-6)


def test_the_scale_is_frozen_after_the_first_step() -> None:
    params = params_with(G1, G2)
    opt = SGDSaI(params, lr=0.01, momentum=0.9, weight_decay=0.0)
    opt.step()
    first = [opt.state[p]["scale"] for p in params]
    set_grads(params, np.array([100.0, -1.0, 0.0, 0.0]), np.full((2, 2), 5.0))  # gsnr ≈ 2, 1e9
    opt.step()
    assert [opt.state[p]["scale"] for p in params] == first
    assert opt.gsnr_max() == pytest.approx(np.sqrt(18.0), rel=1e-6)


def test_one_and_two_steps_are_the_closed_form() -> None:
    """m₁ = g₁, m₂ = μm₁ + (1 − μ)g₂; p ← (1 − lr·λ)p − lr·scale·m."""
    lr, mu, wd = 0.1, 0.9, 0.01
    later = (np.array([0.5, -1.0, 2.0, 0.0]), np.array([[2.0, 1.0], [0.0, -1.0]]))
    params = params_with(G1, G2)
    start = [np.full(g.shape, 1.0) for g in (G1, G2)]
    opt = SGDSaI(params, lr=lr, momentum=mu, weight_decay=wd)
    scale = [1.0, gsnr_closed_form(G2) / gsnr_closed_form(G1)]

    opt.step()
    m1 = [G1, G2]
    p1 = [(1 - lr * wd) * p - lr * s * m for p, s, m in zip(start, scale, m1, strict=True)]
    for p, expected in zip(params, p1, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-12)

    set_grads(params, *later)
    opt.step()
    m2 = [mu * m + (1 - mu) * g for m, g in zip(m1, later, strict=True)]
    p2 = [(1 - lr * wd) * p - lr * s * m for p, s, m in zip(p1, scale, m2, strict=True)]
    for p, expected in zip(params, p2, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-12)


def test_one_tensor_is_sgd_with_dampened_momentum() -> None:
    """With one tensor (scale 1) and no weight decay, the EMA m ← μm + (1 − μ)g started at
    g is torch's SGD with dampening = momentum: its rate is the lr, not lr/(1 − μ)."""
    torch.manual_seed(0)
    grads = [torch.randn(5, 3, dtype=torch.float64) for _ in range(4)]
    ours = torch.nn.Parameter(torch.ones(5, 3, dtype=torch.float64))
    theirs = torch.nn.Parameter(torch.ones(5, 3, dtype=torch.float64))
    sai = SGDSaI([ours], lr=0.05, momentum=0.8, weight_decay=0.0)
    sgd = torch.optim.SGD([theirs], lr=0.05, momentum=0.8, dampening=0.8)
    for g in grads:
        ours.grad, theirs.grad = g.clone(), g.clone()
        sai.step()
        sgd.step()
        torch.testing.assert_close(ours, theirs, rtol=1e-14, atol=1e-14)


def test_a_state_dict_round_trip_keeps_the_scales() -> None:
    """A resumed optimiser continues exactly as the original, and does not recompute the
    scales from the gradient it sees first (which here would give other ones)."""
    params = params_with(G1, G2)
    opt = SGDSaI(params, lr=0.1, momentum=0.9, weight_decay=0.01)
    opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)  # as the loop's checkpoints, read weights-only
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = SGDSaI(copies, lr=0.1, momentum=0.9, weight_decay=0.01)
    resumed.load_state_dict(saved)
    later = [(np.array([9.0, 0.0, 0.0, 0.0]), np.full((2, 2), 1.0)), (G2.ravel(), G1.reshape(2, 2))]
    for grads in later:
        set_grads(params, *grads)
        set_grads(copies, *grads)
        opt.step()
        resumed.step()
    for a, b in zip(params, copies, strict=True):
        assert resumed.state[b]["scale"] == opt.state[a]["scale"]
        torch.testing.assert_close(a, b, rtol=0.0, atol=0.0)
    assert resumed.gsnr_max() == opt.gsnr_max()


def test_a_tensor_without_a_gradient_at_the_first_step_is_scaled_at_its_first() -> None:
    """Skipped at the first step (no decay either), as the reference does; its scale comes
    from its own first gradient against the first step's max, and may exceed 1."""
    big = np.arange(64.0) - 20.0  # gsnr ≈ 8.3 > √18
    params = params_with(G1, G2, big)
    set_grads(params, G1, G2, None)
    opt = SGDSaI(params, lr=0.1, momentum=0.9, weight_decay=0.5)
    opt.step()
    assert "scale" not in opt.state[params[2]]
    assert torch.equal(params[2].detach(), torch.ones(64, dtype=torch.float64))
    set_grads(params, G2.ravel(), G1.reshape(2, 2), big)
    opt.step()
    expected = gsnr_closed_form(big) / gsnr_closed_form(G1)
    assert opt.state[params[2]]["scale"] == pytest.approx(expected, rel=1e-6)
    assert expected > 1.0
    assert opt.state[params[0]]["scale"] == 1.0
    np.testing.assert_allclose(
        params[2].detach().numpy(), (1 - 0.1 * 0.5) - 0.1 * expected * big, rtol=1e-12
    )


def test_an_all_zero_first_gradient_leaves_the_scales_to_the_first_non_zero_one() -> None:
    params = params_with(np.zeros(4), np.zeros((2, 2)))
    opt = SGDSaI(params, lr=0.1, momentum=0.0, weight_decay=0.0)
    opt.step()
    assert opt.gsnr_max() is None
    assert all(torch.equal(p.detach(), torch.ones_like(p)) for p in params)
    set_grads(params, G1, G2)
    opt.step()
    assert opt.gsnr_max() == pytest.approx(np.sqrt(18.0), rel=1e-6)
    assert np.isfinite(params[0].detach().numpy()).all()


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"lr": -0.1}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"eps": -1.0}, "eps"),
    ],
)
def test_invalid_values_are_named(kwargs: dict[str, float], text: str) -> None:
    values = {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, **kwargs}
    with pytest.raises(ValueError, match=text):
        SGDSaI([torch.nn.Parameter(torch.ones(2))], **values)


# The digits CNN of bench/specs/digits_cnn.yaml (eval loss 0.15 within 600 steps, linear
# decay to 0.1). By hand (trainables seed 0, momentum 0.9), SGD-SaI reached it at every
# lr from 0.125 to 4 at B = 64, fastest in 70 steps at lr 2 (SGD: 60 at lr 0.2, i.e.
# lr/(1 − m) = 2); lr 1 is in the middle of that range.
DIGITS: dict[str, Any] = {
    "name": "digits-sgd-sai",
    "workload": "digits_cnn",
    "target": {"metric": "loss", "value": 0.15},
    "budget": {"max_steps": 600},
    "eval_every": 10,
    "optimizer": "sgd_sai",
    "space": {"batch_size": [64], "lr": [1.0], "momentum": [0.9]},
    "schedule": {"kind": "linear", "final_lr_fraction": 0.1},
    "measure": {"noise_every": 0},
}


def test_sgd_sai_trains_the_digits_cnn_to_its_target() -> None:
    spec = parse_spec(DIGITS)
    config = {"batch_size": 64, "lr": 1.0, "momentum": 0.9, "schedule": "linear"}
    rows: list[dict[str, Any]] = []
    last = run_trial(
        trial_settings(spec, Path(".")), Hyperparameters.from_config(config), rows.append
    )
    assert last[keys.TRIAL_STATUS] == keys.REACHED, last[keys.REASON]
    assert last[keys.STEPS_TO_TARGET] <= 200
    assert last[keys.LOSS] <= 0.15 < rows[0][keys.LOSS]


def test_the_cold_start_order_knows_the_sgd_ema_law() -> None:
    from tuner.strategy.records import TrialRecord
    from tuner.strategy.start_order import cold_prediction

    best = {16: TrialRecord(16, 0.25, 0.9, 0, law="sgd_ema")}
    predicted = cold_prediction(TrialRecord(64, 0.5, 0.9, 0, law="sgd_ema"), best)
    assert predicted == pytest.approx(0.25 * 2.0)  # (64/16)^½, on the lr itself


def test_every_law_has_a_cold_start_exponent() -> None:
    from tuner import theory
    from tuner.strategy.start_order import COLD_EXPONENT

    assert set(COLD_EXPONENT) == set(theory.LR_LAWS)
