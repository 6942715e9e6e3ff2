"""The built-in workloads (DESIGN.md §1): data, exact noise statistics, training smoke tests."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch
from _helpers import spec_trial_settings
from torch.func import functional_call, grad, vmap
from torch.utils.data import TensorDataset

from trainables import keys
from trainables.loop import run_trial
from trainables.settings import Hyperparameters
from trainables.workload import Workload, build_workload, cached_workload
from trainables.workloads import char_transformer, digits_cnn, linear_regression, teacher_mlp


def _tensors(workload: Workload) -> tuple[torch.Tensor, ...]:
    assert isinstance(workload.train_data, TensorDataset)
    return tuple(workload.train_data.tensors)


def _eval_loss(workload: Workload) -> float:
    assert isinstance(workload.eval_data, TensorDataset)
    with torch.no_grad():
        return float(workload.loss(workload.model, tuple(workload.eval_data.tensors)))


# --- linear regression -----------------------------------------------------------------


def _brute_force_stats(workload: Workload) -> dict[str, float]:
    """Per-example gradients with torch.func, covariance with numpy.cov, explicit H·Σ."""
    x, y = (t.to(torch.float64) for t in _tensors(workload))
    model = copy.deepcopy(workload.model).to(torch.float64)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> Any:
        out = functional_call(model, p, (xi[None],))
        return 0.5 * (out.squeeze() - yi) ** 2

    grads = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)["weight"]
    g = grads.reshape(len(x), -1).numpy()
    xn = x.numpy()
    mean = g.mean(axis=0)
    sigma = np.cov(g, rowvar=False, bias=True)
    h = xn.T @ xn / len(xn)
    return {
        "true_g2": float(mean @ mean),
        "true_trace_sigma": float(np.trace(sigma)),
        "true_b_simple": float(np.trace(sigma) / (mean @ mean)),
        "true_g_h_g": float(mean @ h @ mean),
        "true_trace_h_sigma": float(np.trace(h @ sigma)),
        "true_b_noise": float(np.trace(h @ sigma) / (mean @ h @ mean)),
        "true_eps_max": float((mean @ mean) / (mean @ h @ mean)),
    }


def test_linear_regression_metrics_match_brute_force() -> None:
    workload = linear_regression.build(
        {"dim": 8, "n_train": 2000, "noise": 0.7, "spectrum_power": 1.5, "seed": 3}
    )
    with torch.no_grad():
        generator = torch.Generator().manual_seed(11)
        workload.model.weight.copy_(torch.randn(1, 8, generator=generator))
    assert workload.metrics is not None
    exact = workload.metrics(workload.model)
    brute = _brute_force_stats(workload)
    assert set(exact) == set(linear_regression.METRIC_NAMES) == set(brute)
    for name, value in brute.items():
        assert isinstance(exact[name], float)
        assert exact[name] == pytest.approx(value, rel=1e-8), name


def test_linear_regression_true_gradient_is_the_eval_loss_gradient() -> None:
    workload = linear_regression.build({"dim": 8, "n_train": 3000, "seed": 1})
    with torch.no_grad():
        workload.model.weight.fill_(0.3)
    x, y = _tensors(workload)
    workload.model.zero_grad()
    workload.loss(workload.model, (x, y)).backward()
    g = workload.model.weight.grad
    assert g is not None
    assert workload.metrics is not None
    exact = workload.metrics(workload.model)
    assert exact["true_g2"] == pytest.approx(float(g.double().pow(2).sum()), rel=1e-4)
    assert workload.eval_data is workload.train_data


def test_linear_regression_approaches_gaussian_closed_forms() -> None:
    dim, noise, seed = 16, 1.0, 0
    workload = linear_regression.build(
        {"dim": dim, "n_train": 65536, "noise": noise, "spectrum_power": 1.0, "seed": seed}
    )
    assert workload.metrics is not None
    exact = workload.metrics(workload.model)  # at w = 0
    lam = np.arange(1, dim + 1, dtype=np.float64) ** -1.0
    delta = -np.random.default_rng(seed).standard_normal(dim)  # w − w* at w = 0
    g = lam * delta
    two_l = delta @ (lam * delta) + noise**2
    closed = {
        "true_g2": g @ g,
        "true_b_simple": 1 + two_l * lam.sum() / (g @ g),
        "true_b_noise": 1 + two_l * (lam**2).sum() / (delta @ (lam**3 * delta)),
        "true_eps_max": (g @ g) / (delta @ (lam**3 * delta)),
    }
    for name, value in closed.items():
        assert exact[name] == pytest.approx(value, rel=0.06), name
    assert _eval_loss(workload) == pytest.approx(two_l / 2, rel=0.03)


def test_linear_regression_defaults_and_contract() -> None:
    workload = build_workload("linear_regression", {})
    assert isinstance(workload, Workload)
    x, y = _tensors(workload)
    assert x.shape == (65536, 100) and y.shape == (65536,)
    assert x.dtype == y.dtype == torch.float32
    assert torch.count_nonzero(workload.model.weight) == 0
    idx = torch.randint(len(x), (32,), generator=torch.Generator().manual_seed(0))
    batch = tuple(t[idx] for t in _tensors(workload))
    loss = workload.loss(workload.model, batch)
    assert loss.shape == () and torch.isfinite(loss)
    assert loss.item() == pytest.approx(0.5 * batch[1].pow(2).mean().item(), rel=1e-6)


# --- teacher → student MLP -------------------------------------------------------------

SMALL_MLP = {"n_train": 2048, "n_eval": 512}


@pytest.fixture(scope="module")
def mlp() -> Workload:
    return teacher_mlp.build({})


def _sgd_steps_to_target(
    workload: Workload, batch_size: int, lr: float, max_steps: int, target: float = 1.30
) -> tuple[int | None, float]:
    """Plain SGD (momentum 0) on a copy of the model, eval every 5 steps."""
    model = copy.deepcopy(workload.model)
    data = _tensors(workload)
    assert isinstance(workload.eval_data, TensorDataset)
    eval_batch = tuple(workload.eval_data.tensors)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.0)
    best = math.inf
    for step in range(1, max_steps + 1):
        idx = torch.randint(len(data[0]), (batch_size,), generator=generator)
        optimizer.zero_grad()
        workload.loss(model, tuple(t[idx] for t in data)).backward()
        optimizer.step()
        if step % 5 == 0:
            with torch.no_grad():
                value = float(workload.loss(model, eval_batch))
            best = min(best, value)
            if value <= target:
                return step, value
    return None, best


def test_teacher_mlp_bayes_ce_and_initial_loss(mlp: Workload) -> None:
    assert mlp.metrics is not None
    metrics = mlp.metrics(mlp.model)
    assert set(metrics) == set(teacher_mlp.METRIC_NAMES)
    assert 1.10 <= metrics["bayes_ce"] <= 1.18
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert _eval_loss(mlp) > 2.0


@pytest.mark.parametrize(("batch_size", "lr", "max_steps"), [(1024, 1.0, 200), (128, 0.25, 1000)])
def test_teacher_mlp_sgd_reaches_target(
    mlp: Workload, batch_size: int, lr: float, max_steps: int
) -> None:
    step, value = _sgd_steps_to_target(mlp, batch_size, lr, max_steps)
    assert step is not None, f"B={batch_size} lr={lr}: best eval CE {value:.4f} > 1.30"
    print(f"B={batch_size} lr={lr}: eval CE {value:.4f} <= 1.30 at step {step}")


def test_teacher_mlp_contract(mlp: Workload) -> None:
    assert isinstance(mlp, Workload)
    x, y = _tensors(mlp)
    assert x.shape == (262144, 32) and x.dtype == torch.float32
    assert y.shape == (262144,) and y.dtype == torch.int64
    assert int(y.min()) >= 0 and int(y.max()) <= 9
    assert isinstance(mlp.eval_data, TensorDataset)
    assert mlp.eval_data.tensors[0].shape == (4096, 32)
    assert sum(p.numel() for p in mlp.model.parameters()) == 6922
    idx = torch.randint(len(x), (16,), generator=torch.Generator().manual_seed(0))
    loss = mlp.loss(mlp.model, tuple(t[idx] for t in (x, y)))
    assert loss.shape == () and torch.isfinite(loss)


def test_teacher_mlp_student_matches_manual_seed() -> None:
    workload = teacher_mlp.build({**SMALL_MLP, "seed": 5})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        reference = torch.nn.Sequential(
            torch.nn.Linear(32, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 10),
        )
    ours, theirs = workload.model.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


# --- both --------------------------------------------------------------------------------

BUILDERS = [
    pytest.param(linear_regression.build, {"dim": 4, "n_train": 256}, id="linear_regression"),
    pytest.param(teacher_mlp.build, SMALL_MLP, id="teacher_mlp"),
]


@pytest.mark.parametrize(("build", "small"), BUILDERS)
def test_deterministic_from_seed_without_global_rng(build: Any, small: dict[str, Any]) -> None:
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    a, b = build({**small, "seed": 7}), build({**small, "seed": 7})
    c = build({**small, "seed": 8})
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()  # type: ignore[index]
    for ta, tb, tc in zip(_tensors(a), _tensors(b), _tensors(c), strict=True):
        assert torch.equal(ta, tb)
        assert not torch.equal(ta, tc)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert a.metrics is not None and b.metrics is not None
    assert a.metrics(a.model) == b.metrics(b.model)


@pytest.mark.parametrize(("build", "small"), BUILDERS)
def test_unknown_argument_is_named(build: Any, small: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="'widht'"):
        build({**small, "widht": 3})


@pytest.mark.parametrize(
    ("build", "args", "name"),
    [
        (linear_regression.build, {"dim": 0}, "dim"),
        (linear_regression.build, {"dim": 2.5}, "dim"),
        (linear_regression.build, {"dim": True}, "dim"),
        (linear_regression.build, {"noise": -1.0}, "noise"),
        (linear_regression.build, {"noise": "loud"}, "noise"),
        (linear_regression.build, {"spectrum_power": math.nan}, "spectrum_power"),
        (linear_regression.build, {"n_train": 0}, "n_train"),
        (linear_regression.build, {"seed": -1}, "seed"),
        (teacher_mlp.build, {"classes": 1}, "classes"),
        (teacher_mlp.build, {"scale": -4.0}, "scale"),
        (teacher_mlp.build, {"student_widths": [64, 0]}, "student_widths"),
        (teacher_mlp.build, {"student_widths": 64}, "student_widths"),
        (teacher_mlp.build, {"n_eval": 0}, "n_eval"),
        (teacher_mlp.build, {"in_dim": "32"}, "in_dim"),
        (char_transformer.build, {"n_embd": 30, "n_head": 4}, "n_embd"),
        (char_transformer.build, {"block_size": 1}, "block_size"),
        (char_transformer.build, {"eval_fraction": 0.7}, "eval_fraction"),
        (char_transformer.build, {"n_eval": 10**6}, "n_eval"),
        (char_transformer.build, {"widht": 3}, "widht"),
        (digits_cnn.build, {"channels": 0}, "channels"),
        (digits_cnn.build, {"n_eval": 1797}, "n_eval"),
    ],
)
def test_bad_value_is_a_one_line_value_error(build: Any, args: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name) as info:
        build(args)
    assert "\n" not in str(info.value)


# --- char_transformer and digits_cnn: workloads of the kind users train -----------------------

SMALL_GPT = {"max_chars": 40_000, "block_size": 16, "n_embd": 32, "n_eval": 32}


def test_char_transformer_reads_the_standard_library_and_predicts_the_next_byte() -> None:
    torch.manual_seed(0)
    workload = char_transformer.build(SMALL_GPT)
    x, y = workload.train_data.tensors  # type: ignore[attr-defined]
    assert x.shape[1] == 16 and x.dtype == torch.long and int(x.max()) < 256
    assert torch.equal(x[5, 1:], y[5, :-1])  # targets: the same window one byte on
    assert bytes(x[0].tolist()) == char_transformer.stdlib_text(40_000)[:16]
    eval_x, _ = workload.eval_data.tensors  # type: ignore[union-attr]
    assert eval_x.shape == (32, 16)
    # the eval windows are the last 10% of the text, cut every 16 bytes, unseen in training
    text = char_transformer.stdlib_text(40_000)
    assert bytes(eval_x[1].tolist()) == text[36_000 + 16 : 36_000 + 32]
    assert len(x) == 36_000 - 16
    loss = workload.loss(workload.model, (x[:8], y[:8])).detach()
    assert abs(float(loss) - math.log(256)) < 0.2  # an untrained model: about uniform
    assert workload.metrics is not None
    bpb = workload.metrics(workload.model)[char_transformer.BITS_PER_BYTE]
    assert bpb == pytest.approx(_eval_loss(workload) / math.log(2), rel=1e-5)
    model = workload.model
    assert model.head.weight is model.token.weight  # type: ignore[union-attr]


def test_char_transformer_is_causal() -> None:
    """Changing a later byte never changes the prediction at an earlier position."""
    torch.manual_seed(0)
    model = char_transformer.build(SMALL_GPT).model.eval()
    x = torch.randint(256, (2, 16), generator=torch.Generator().manual_seed(1))
    changed = x.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 256
    with torch.no_grad():
        a, b = model(x), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_char_transformer_learns_with_adamw_and_a_cosine_schedule() -> None:
    s = spec_trial_settings(
        workload="char_transformer",
        workload_args=SMALL_GPT,
        optimizer="adamw",
        target_value=3.2,
        max_steps=150,
        eval_every=25,
        noise_every=4,
        final_lr_fraction=0.1,
    )
    reports: list[dict[str, Any]] = []
    hp = Hyperparameters(32, 3e-3, 0.9, 10, beta2=0.99, schedule="cosine")
    last = run_trial(s, hp, reports.append)
    assert last[keys.TRIAL_STATUS] == keys.REACHED, [r[keys.LOSS] for r in reports]
    assert math.isfinite(last[keys.B_SIMPLE]) and last[keys.B_SIMPLE] > 0


def test_digits_cnn_is_real_images_split_once() -> None:
    torch.manual_seed(0)
    workload = digits_cnn.build({})
    x, y = workload.train_data.tensors  # type: ignore[attr-defined]
    eval_x, eval_y = workload.eval_data.tensors  # type: ignore[union-attr]
    assert x.shape == (1437, 1, 8, 8) and eval_x.shape == (360, 1, 8, 8)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert set(y.tolist()) == set(range(10)) == set(eval_y.tolist())
    again = digits_cnn.build({})
    assert torch.equal(again.eval_data.tensors[0], eval_x)  # type: ignore[union-attr]
    other = digits_cnn.build({"split_seed": 1})
    assert not torch.equal(other.eval_data.tensors[0], eval_x)  # type: ignore[union-attr]
    assert workload.metrics is not None
    assert 0.0 <= workload.metrics(workload.model)[digits_cnn.ACCURACY] <= 0.3


def test_digits_cnn_reaches_an_accuracy_target_with_sgd() -> None:
    s = spec_trial_settings(
        workload="digits_cnn",
        workload_args={},
        target_metric="accuracy",
        target_value=0.95,
        target_mode="max",
        max_steps=400,
        eval_every=20,
    )
    last = run_trial(s, Hyperparameters(64, 0.2, 0.9, 0), lambda report: None)
    assert last[keys.TRIAL_STATUS] == keys.REACHED


# --- the per-process cache of a reused Tune actor -----------------------------------------


def test_cached_workload_shares_the_data_and_copies_the_model() -> None:
    args = {"dim": 4, "n_train": 256}
    first = cached_workload("linear_regression", args)
    with torch.no_grad():
        for p in first.model.parameters():
            p.add_(1.0)  # a trial trains its copy
    second = cached_workload("linear_regression", dict(reversed(list(args.items()))))
    assert second.train_data is first.train_data and second.loss is first.loss
    assert second.model is not first.model
    fresh = build_workload("linear_regression", args)
    for ours, built in zip(second.model.parameters(), fresh.model.parameters(), strict=True):
        assert torch.equal(ours, built)  # as built, untouched by the first trial
    other = cached_workload("linear_regression", {**args, "seed": 1})
    assert other.train_data is not first.train_data


def test_trials_on_the_cached_workload_report_what_fresh_builds_report() -> None:
    s = spec_trial_settings(
        workload="teacher_mlp", workload_args=SMALL_MLP, max_steps=30, eval_every=10,
        target_value=0.0,
    )  # fmt: skip

    def reports(workload: Workload | None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        run_trial(s, Hyperparameters(32, 0.1, 0.9, 0), out.append, workload=workload)
        return [{k: v for k, v in r.items() if k != keys.WALL_S} for r in out]

    fresh = reports(None)
    for _ in range(2):  # the second trial of a process starts from the model as built too
        cached = reports(cached_workload(s.workload, s.workload_args))
        assert str(cached) == str(fresh)  # str: NaN == NaN
