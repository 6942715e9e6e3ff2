"""GᵀHG and tr(HΣ) from Hessian-vector products (McCandlish et al. 2018, App. A.1)."""

from __future__ import annotations

import math
import os
from typing import Any

import pytest
import torch
import torch.distributed as dist
from _helpers import run_gloo_workers, spec_trial_settings
from _helpers import tiny_batch as _batch
from _helpers import tiny_loss as _loss
from _helpers import tiny_model as _model
from torch.func import functional_call
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import TensorDataset

from trainables import keys
from trainables.loop import TrainingRun, run_trial
from trainables.measure.curvature import CurvaturePair, curvature_pair, hessian_quadratic_forms
from trainables.measure.noise_capture import DDPNormState, MicroBatchNorms, allreduce_with_norms
from trainables.parts.batches import split_batch
from trainables.parts.world import World
from trainables.settings import Hyperparameters, TrialSettings
from trainables.workload import Workload, build_workload
from tuner.theory import ghg_estimate, trace_h_sigma_estimate

LINREG = {"dim": 16, "noise": 0.5, "n_train": 8192}


def _explicit_hessian(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    """The full Hessian of the batch loss over all parameters, flattened in order."""
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(theta: torch.Tensor) -> torch.Tensor:
        params, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            params[name] = theta[start : start + shape.numel()].reshape(shape)
            start += shape.numel()
        return _loss(lambda x: functional_call(model, params, (x,)), batch)  # type: ignore[arg-type]

    hessian: torch.Tensor = torch.autograd.functional.hessian(loss_of, flat)
    return hessian


def _flat(vector: Any) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in vector])


def _micro_batch_forms(
    batch_size: int, parts: int, h_batch: Any
) -> tuple[CurvaturePair, list[torch.Tensor], torch.Tensor]:
    """The single-process pair via MicroBatchNorms(keep_grads), plus the vectors used."""
    model = _model()
    params = list(model.parameters())
    norms = MicroBatchNorms(params, keep_grads=True)
    with norms.capturing():
        for micro, size in split_batch(_batch(batch_size), parts):
            weight = size / batch_size
            with norms.micro_batch(size, weight):
                (_loss(model, micro) * weight).backward()
    pair = norms.pair()
    small = norms.take_grads()
    big = [p.grad for p in params]
    forms = curvature_pair(_loss(model, h_batch), params, small, big, pair.b_small, pair.b_big)
    return forms, [_flat(v) for v in small], _flat(big)


def test_quadratic_forms_match_the_explicit_hessian() -> None:
    model = _model()
    params = list(model.parameters())
    h_batch = _batch(32, seed=7)
    hessian = _explicit_hessian(model, h_batch)
    generator = torch.Generator().manual_seed(3)
    vectors = [[torch.randn(p.shape, generator=generator) for p in params] for _ in range(3)]
    forms = hessian_quadratic_forms(_loss(model, h_batch), params, vectors)
    for form, vector in zip(forms, vectors, strict=True):
        v = _flat(vector)
        assert float(form) == pytest.approx(float(v @ hessian @ v), rel=1e-5)
    assert all(p.grad is None for p in params)  # autograd.grad only: .grad untouched


def test_micro_batch_pair_matches_the_explicit_hessian_and_gradients() -> None:
    """Kept micro-batch gradients are the explicit ones; forms, GᵀHG and tr(HΣ) follow."""
    batch_size, parts = 12, 3
    h_batch = _batch(20, seed=7)
    forms, small, big = _micro_batch_forms(batch_size, parts, h_batch)
    model = _model()
    params = list(model.parameters())
    for kept, (micro, _) in zip(small, split_batch(_batch(batch_size), parts), strict=True):
        explicit = _flat(torch.autograd.grad(_loss(model, micro), params))
        torch.testing.assert_close(kept, explicit, rtol=1e-5, atol=1e-7)
    hessian = _explicit_hessian(model, h_batch)
    h_small = sum(float(v @ hessian @ v) for v in small) / parts
    h_big = float(big @ hessian @ big)
    assert forms.h_small == pytest.approx(h_small, rel=1e-5)
    assert forms.h_big == pytest.approx(h_big, rel=1e-5)
    assert (forms.b_small, forms.b_big) == (4.0, 12.0)
    assert forms.ghg() == pytest.approx(ghg_estimate(4.0, 12.0, h_small, h_big), rel=1e-4)
    assert forms.trace_h_sigma() == pytest.approx(
        trace_h_sigma_estimate(4.0, 12.0, h_small, h_big), rel=1e-4
    )


def test_parameters_without_curvature_give_zero_rows() -> None:
    """A loss linear in a parameter (and one not using another) has zero rows of H."""
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b = torch.tensor([3.0], requires_grad=True)
    unused = torch.tensor([1.0], requires_grad=True)
    loss = (a**2).sum() + 5 * b.sum()
    v = [torch.tensor([1.0, 1.0]), torch.tensor([2.0]), torch.tensor([4.0])]
    forms = hessian_quadratic_forms(loss, [a, b, unused], [v, [None, v[1], None]])
    assert forms.tolist() == [4.0, 0.0]  # vᵀHv with H = diag(2, 2, 0, 0)


def settings(**overrides: Any) -> TrialSettings:
    base: dict[str, Any] = {
        "workload": "linear_regression",
        "workload_args": LINREG,
        "target_value": -1.0,
        "max_steps": 40,
        "eval_every": 5,
        "noise_every": 1,
    }
    return spec_trial_settings(**{**base, **overrides})


def run(s: TrialSettings, batch_size: int, lr: float, workload: Workload | None = None):
    reports: list[dict[str, Any]] = []
    last = run_trial(s, Hyperparameters(batch_size, lr, 0.0, 0), reports.append, workload=workload)
    return last, reports


def test_stationary_b_noise_and_eps_max_match_the_exact_values() -> None:
    """A tiny lr keeps the weights (hence the true B_noise, ε_max) stationary.

    300 measurements in the EMA (horizon 3) weigh like ~170 independent ones. The spread
    is variance, not bias: over 20 seeds the ratio b_noise/true was 1.03 ± 0.12 (sd) with
    2 micro-batches and 1.00 ± 0.05 with 4; eps_max/true 1.00 ± 0.04 and 0.99 ± 0.03.
    """
    s = settings(max_steps=300, eval_every=300, curvature_every=1, micro_batches=4)
    last, _ = run(s, 256, 1e-5)
    assert last[keys.B_NOISE] == pytest.approx(last["true_b_noise"], rel=0.2)
    assert last[keys.EPS_MAX] == pytest.approx(last["true_eps_max"], rel=0.2)
    assert last[keys.GHG] == pytest.approx(last["true_g_h_g"], rel=0.2)
    assert last[keys.TRACE_H_SIGMA] == pytest.approx(last["true_trace_h_sigma"], rel=0.2)


class _Noisy(torch.nn.Module):
    """BatchNorm (buffers) and dropout (global RNG): what an extra forward could perturb."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(),
            torch.nn.Dropout(0.3), torch.nn.Linear(8, 3),
        )  # fmt: skip
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


def _noisy_workload() -> Workload:
    data = TensorDataset(*_batch(512, seed=5))
    return Workload(model=_Noisy(), train_data=data, loss=_loss, eval_data=data)


@pytest.mark.parametrize("workload", ["linear_regression", "noisy"])
def test_curvature_does_not_perturb_the_training_trajectory(workload: str) -> None:
    """Same losses and weights with curvature off and every 5 steps (noise measured on
    every step by micro-batches in both, so the batches are split alike: measured per
    example, the other steps would sum the whole batch's loss in another order)."""
    runs = []
    for every in (0, 5):
        torch.manual_seed(0)  # dropout masks draw from the global RNG
        w = _noisy_workload() if workload == "noisy" else build_workload(workload, LINREG)
        s = settings(curvature_every=every, patience_steps=0, noise_method="micro_batch")
        last, reports = run(s, 32, 0.1, workload=w)
        weights = [p.detach().clone() for p in w.model.state_dict().values()]
        runs.append((last, reports, weights))
        assert last[keys.STEP] == 40 and len(reports) == 9
    (off, off_reports, off_weights), (on, on_reports, on_weights) = runs
    assert [r[keys.LOSS] for r in on_reports] == [r[keys.LOSS] for r in off_reports]
    assert [r[keys.B_SIMPLE] for r in on_reports[1:]] == [r[keys.B_SIMPLE] for r in off_reports[1:]]
    for a, b in zip(on_weights, off_weights, strict=True):
        assert torch.equal(a, b)
    for key in (keys.B_NOISE, keys.GHG, keys.TRACE_H_SIGMA, keys.EPS_MAX):
        assert math.isnan(off[key])
        assert math.isnan(on_reports[0][key])  # nothing measured before step 1
        assert math.isfinite(on[key])


def test_grad_is_unchanged_by_the_measurement() -> None:
    run = TrainingRun(
        settings(curvature_every=1), Hyperparameters(32, 0.1, 0.0, 0), torch.device("cpu"), World()
    )
    captured = run.strategy.backward(run.batches.next(), measure=True, keep_grads=True)
    assert captured.pair is not None and captured.small_grads is not None
    before = [p.grad.clone() for p in run.params if p.grad is not None]
    forms = run.curvature.measure(captured.pair, captured.small_grads)
    assert forms.is_finite() and forms.b_small == 16 and forms.b_big == 32
    after = [p.grad for p in run.params]
    for a, b in zip(after, before, strict=True):
        assert a is not None and torch.equal(a, b)


def test_curvature_steps_measure_the_noise_scale_by_micro_batches() -> None:
    """They need the small batches' gradient vectors: with curvature only, the reports say
    the noise scale was measured by micro-batches; with both, by the noise steps' method."""
    last, _ = run(settings(noise_every=0, curvature_every=2, max_steps=10), 32, 0.1)
    assert last[keys.NOISE_METHOD] == "micro_batch" and math.isfinite(last[keys.B_SIMPLE])
    last, _ = run(settings(curvature_every=2, max_steps=10), 32, 0.1)
    assert last[keys.NOISE_METHOD] == "per_example"


def test_bf16_keeps_the_hessian_in_fp32() -> None:
    last, _ = run(settings(curvature_every=2, precision="bf16", max_steps=10), 32, 0.1)
    assert math.isfinite(last[keys.B_NOISE]) and last[keys.EPS_MAX] > 0


def _ddp_worker(rank: int, world: int, port: int, batch_size: int, queue: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = DistributedDataParallel(_model())
        state = DDPNormState(world)
        model.register_comm_hook(state, allreduce_with_norms)
        params = list(model.module.parameters())
        local = batch_size // world
        x, y = _batch(batch_size)
        state.start(torch.device("cpu"), keep_grads=True)
        _loss(
            model, (x[rank * local : (rank + 1) * local], y[rank * local : (rank + 1) * local])
        ).backward()
        small = [state.local_grads(params)]
        pair = state.pair(local)
        # The same (whole) Hessian batch on both workers, as the single process uses.
        h_loss = _loss(model.module, _batch(20, seed=7))
        forms = curvature_pair(h_loss, params, small, [p.grad for p in params], 8, 16, world)
        # The loop end to end: each worker its slice of the training and Hessian batches.
        reports: list[dict[str, Any]] = []
        run_trial(
            settings(curvature_every=2, max_steps=10, micro_batches=world),
            Hyperparameters(batch_size, 0.1, 0.0, 0),
            reports.append,
            world=World(rank, world),
        )
        queue.put((rank, pair, forms, reports))
    finally:
        dist.destroy_process_group()


def test_two_gloo_workers_agree_with_single_process_micro_batches() -> None:
    """The comm hook's local gradients give the micro-batch quadratic forms exactly."""
    batch_size, world = 16, 2
    outputs = run_gloo_workers(_ddp_worker, world, batch_size)
    single, _, _ = _micro_batch_forms(batch_size, world, _batch(20, seed=7))
    # Measured per example on the other steps: each worker's mean over its examples,
    # averaged over the workers, is one process's mean over them all.
    _, single_reports = run(
        settings(curvature_every=2, max_steps=10, micro_batches=world), batch_size, 0.1
    )
    for _, pair, forms, reports in outputs:
        assert (pair.b_small, pair.b_big) == (single.b_small, single.b_big)
        assert forms.h_small == pytest.approx(single.h_small, rel=1e-5)
        assert forms.h_big == pytest.approx(single.h_big, rel=1e-5)
        assert forms.ghg() == pytest.approx(single.ghg(), rel=1e-4)
        assert forms.trace_h_sigma() == pytest.approx(single.trace_h_sigma(), rel=1e-4)
        # Same training as one process; the curvature is measured (on other H slices).
        losses = [r[keys.LOSS] for r in reports]
        assert losses == pytest.approx([r[keys.LOSS] for r in single_reports], rel=1e-5)
        assert math.isfinite(reports[-1][keys.B_NOISE])
        # The noise scale as one process measures it, on every worker, at every report.
        for key in (keys.G2, keys.TRACE_SIGMA, keys.B_SIMPLE):
            values = [r[key] for r in reports[1:]]
            assert values == pytest.approx([r[key] for r in single_reports[1:]], rel=1e-4)
