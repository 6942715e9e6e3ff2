"""Per-example gradient norms from one backward pass, against torch.func's per-sample
gradients (vmap of grad: each example's gradient computed on its own)."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from trainables import keys
from trainables.errors import TrialInputError
from trainables.measure import layer_gradients
from trainables.measure.per_example import PerExampleNorms, uncovered

LossFn = Callable[[nn.Module, Any], torch.Tensor]


def per_sample_truth(
    model: nn.Module, loss_fn: LossFn, batch: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """|∇ℓ_i|² of every example, each gradient computed alone by torch.func."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    class Bound(nn.Module):
        def __init__(self, p: dict[str, torch.Tensor]) -> None:
            super().__init__()
            self.p = p

        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = functional_call(model, self.p, (inp,))
            return out

    def one(p: dict[str, torch.Tensor], *example: torch.Tensor) -> torch.Tensor:
        return loss_fn(Bound(p), tuple(e.unsqueeze(0) for e in example))

    grads = vmap(grad(one), in_dims=(None, *([0] * len(batch))))(params, *batch)
    return torch.stack(
        [g.reshape(g.shape[0], -1).double().square().sum(1) for g in grads.values()]
    ).sum(0)


def captured(
    model: nn.Module, loss_fn: LossFn, batch: tuple[torch.Tensor, ...], parts: int = 1
) -> tuple[torch.Tensor, PerExampleNorms]:
    """The hooks' per-example |∇ℓ_i|² over `parts` accumulated micro-batches, verified."""
    norms = PerExampleNorms(model, list(model.parameters()))
    size = batch[0].shape[0]
    model.zero_grad(set_to_none=True)
    bounds = [round(i * size / parts) for i in range(parts + 1)]
    with norms.capturing(verify=True):
        for lo, hi in itertools.pairwise(bounds):
            with norms.micro_batch(hi - lo, (hi - lo) / size):
                (loss_fn(model, tuple(b[lo:hi] for b in batch)) * ((hi - lo) / size)).backward()
    norms.verify({id(p): n for n, p in model.named_parameters()})
    return torch.cat(norms._per_example), norms


class TinyGPT(nn.Module):
    """Embeddings (positions given per example), LayerNorm, an MLP over the sequence,
    RMSNorm and a head tied (or not) to the token embedding."""

    def __init__(
        self, vocab: int, block: int, width: int, tied: bool, padding_idx: int | None = None
    ) -> None:
        super().__init__()
        self.vocab = vocab
        self.token = nn.Embedding(vocab, width, padding_idx=padding_idx)
        self.position = nn.Embedding(block, width)
        self.ln = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(3 * width, width)
        self.rms = nn.RMSNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        if tied:
            self.head.weight = self.token.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        b, t = idx.shape
        x = self.token(idx) + self.position(torch.arange(t, device=idx.device).expand(b, t))
        x = x + self.proj(F.gelu(self.fc(self.ln(x))))
        out: torch.Tensor = self.head(self.rms(x))
        return out


def lm_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


class ConvNet(nn.Module):
    """Conv2d (padded; strided and dilated, 'valid'), GroupNorm, Conv1d ('same'), Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.gn = nn.GroupNorm(2, 4)
        self.c2 = nn.Conv2d(4, 3, (3, 2), stride=2, dilation=(1, 2), padding="valid")
        self.c3 = nn.Conv1d(3, 5, 4, padding="same")
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c2(F.relu(self.gn(self.c1(x)))).flatten(2)
        out: torch.Tensor = self.fc(self.c3(x).mean(-1))
        return out


def class_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def tokens(b: int, t: int, vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (b, t), generator=g), torch.randint(
        0, vocab, (b, t), generator=g
    )


CASES: dict[str, Callable[[], tuple[nn.Module, LossFn, tuple[torch.Tensor, ...]]]] = {
    # vocab 11 < T² = 25: embeddings and head instantiated; the MLP by ghost norms.
    "transformer, tied head": lambda: (TinyGPT(11, 5, 8, tied=True), lm_loss, tokens(6, 5, 11)),
    "transformer, untied": lambda: (TinyGPT(11, 5, 8, tied=False), lm_loss, tokens(6, 5, 11)),
    # vocab 97 > T² = 16: the token embedding by its ghost norm over ids; a padding id.
    "transformer, large vocab, padding": lambda: (
        TinyGPT(97, 4, 6, tied=False, padding_idx=3),
        lm_loss,
        (torch.cat([tokens(5, 4, 97)[0], torch.full((1, 4), 3)]), tokens(6, 4, 97, seed=1)[1]),
    ),
    "conv net": lambda: (
        ConvNet(),
        class_loss,
        (torch.randn(6, 2, 7, 9), torch.randint(0, 3, (6,))),
    ),
    "mlp": lambda: (
        nn.Sequential(nn.Linear(7, 16), nn.Tanh(), nn.Linear(16, 4)),
        class_loss,
        (torch.randn(9, 7), torch.randint(0, 4, (9,))),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("parts", [1, 2, 3])
def test_per_example_norms_match_per_sample_gradients(case: str, parts: int) -> None:
    torch.manual_seed(0)
    model, loss_fn, batch = CASES[case]()
    assert uncovered(model) == []
    got, norms = captured(model, loss_fn, batch, parts)
    assert norms.problems == []
    torch.testing.assert_close(got, per_sample_truth(model, loss_fn, batch), rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    "case", ["transformer, tied head", "conv net", "transformer, large vocab, padding"]
)
def test_chunking_and_the_other_branch_give_the_same_norms(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiny chunks (one example at a time), and the ghost/instantiate choice flipped."""
    torch.manual_seed(0)
    model, loss_fn, batch = CASES[case]()
    truth = per_sample_truth(model, loss_fn, batch)
    monkeypatch.setattr(layer_gradients, "CHUNK_ELEMENTS", 1)
    torch.testing.assert_close(captured(model, loss_fn, batch)[0], truth, rtol=1e-5, atol=0)
    monkeypatch.setattr(layer_gradients, "GHOST_COST_FACTOR", 1e9)  # never a ghost norm
    torch.testing.assert_close(captured(model, loss_fn, batch)[0], truth, rtol=1e-5, atol=0)
    monkeypatch.setattr(
        layer_gradients, "GHOST_COST_FACTOR", 1e-9
    )  # a ghost norm wherever there is one
    torch.testing.assert_close(captured(model, loss_fn, batch)[0], truth, rtol=1e-5, atol=0)


def test_pair_is_the_two_batch_estimator_with_one_example_small_batches() -> None:
    torch.manual_seed(0)
    model, loss_fn, batch = CASES["mlp"]()
    truth = per_sample_truth(model, loss_fn, batch)
    norms = PerExampleNorms(model, list(model.parameters()))
    with norms.capturing(), norms.micro_batch(9, 1.0):
        loss_fn(model, batch).backward()
    pair = norms.pair(b_big=9)
    full = sum(
        float(p.grad.double().square().sum()) for p in model.parameters() if p.grad is not None
    )
    assert (pair.b_small, pair.b_big) == (1.0, 9.0)
    assert pair.sq_small == pytest.approx(float(truth.mean()), rel=1e-5)
    assert pair.sq_big == pytest.approx(full, rel=1e-6)


class Sneaky(nn.Module):
    """A Linear whose weight is also used outside its forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(x) + F.linear(x, self.fc.weight)
        return out


class SharedPositions(nn.Module):
    """A position table called without the batch dimension (broadcast over examples)."""

    def __init__(self) -> None:
        super().__init__()
        self.token, self.position = nn.Embedding(5, 4), nn.Embedding(3, 4)
        self.head = nn.Linear(4, 5)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.token(idx) + self.position(torch.arange(idx.shape[1])))
        return out


def test_a_parameter_used_outside_its_layer_fails_the_verification() -> None:
    model = Sneaky()
    _, norms = captured(model, lambda m, b: m(b[0]).square().mean(), (torch.randn(5, 4),))
    assert any(
        line.startswith("fc.weight:") and "off its gradient" in line for line in norms.problems
    )


@pytest.mark.parametrize("max_rows", [1, 2])
def test_the_verification_sums_every_example_while_the_norms_take_the_first(
    max_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With max_rows below the batch, the check still compares the sum over all examples
    with the batch gradient (a clean model passes, Sneaky fails), and the norms are the
    first rows' (chunked one example at a time here)."""
    monkeypatch.setattr(layer_gradients, "CHUNK_ELEMENTS", 1)
    torch.manual_seed(0)
    model, loss_fn, batch = CASES["conv net"]()
    truth = per_sample_truth(model, loss_fn, batch)
    norms = PerExampleNorms(model, list(model.parameters()), max_rows=max_rows)
    names = {id(p): n for n, p in model.named_parameters()}
    with norms.capturing(verify=True), norms.micro_batch(6, 1.0):
        loss_fn(model, batch).backward()
    assert norms.verify(names) and norms.problems == []
    torch.testing.assert_close(torch.cat(norms._per_example), truth[:max_rows], rtol=1e-5, atol=0)
    sneaky = Sneaky()
    norms = PerExampleNorms(sneaky, list(sneaky.parameters()), max_rows=max_rows)
    with norms.capturing(verify=True), norms.micro_batch(5, 1.0):
        sneaky(torch.randn(5, 4)).square().mean().backward()
    norms.verify({id(p): n for n, p in sneaky.named_parameters()})
    assert any(line.startswith("fc.weight:") for line in norms.problems)


def test_a_non_finite_gradient_leaves_the_check_for_the_next_step() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    norms = PerExampleNorms(model, list(model.parameters()))
    x = torch.tensor([[1e38, 1e38, 1e38], [1.0, 2.0, 3.0]])
    with norms.capturing(verify=True), norms.micro_batch(2, 1.0):
        model(x).square().mean().backward()
    assert norms.verify({}) is False and norms.problems == []


def test_a_layer_called_without_the_batch_dimension_is_a_problem() -> None:
    model = SharedPositions()
    _, norms = captured(model, lm_loss, tokens(4, 3, 5))
    assert any("Embedding called on 3 rows" in line for line in norms.problems)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), "1: BatchNorm1d couples the examples"),
        (
            nn.MultiheadAttention(4, 2),
            "in_proj_weight: MultiheadAttention (no per-example formula)",
        ),
        (nn.Conv2d(4, 4, 3, groups=2), "weight: Conv2d with groups 2"),
        (
            nn.utils.parametrizations.weight_norm(nn.Linear(3, 3)),
            "weight.original0: ParametrizationList (no per-example formula)",
        ),
        (nn.Embedding(4, 2, sparse=True), "weight: Embedding with sparse"),
    ],
)
def test_uncovered_says_which_parameter_and_why(model: nn.Module, expected: str) -> None:
    assert any(expected in line for line in uncovered(model))


def test_a_frozen_uncovered_layer_does_not_matter() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.PReLU())
    assert uncovered(model) == ["1.weight: PReLU (no per-example formula)"]
    model[1].weight.requires_grad_(False)
    assert uncovered(model) == []


def test_only_the_first_rows_of_each_micro_batch_are_measured() -> None:
    torch.manual_seed(0)
    model, loss_fn, batch = CASES["transformer, tied head"]()
    truth = per_sample_truth(model, loss_fn, batch)
    norms = PerExampleNorms(model, list(model.parameters()), max_rows=2)
    with norms.capturing():
        for lo, hi in ((0, 3), (3, 6)):
            with norms.micro_batch(3, 0.5):
                (loss_fn(model, tuple(b[lo:hi] for b in batch)) * 0.5).backward()
    got = torch.cat(norms._per_example)
    torch.testing.assert_close(got, truth[[0, 1, 3, 4]], rtol=1e-5, atol=0)


# Trials: which method measures, and what happens where per-example norms cannot.


def _trial(model: nn.Module, method: str, steps: int = 8) -> tuple[Any, list[dict[str, Any]]]:
    from _helpers import spec_trial_settings
    from torch.utils.data import TensorDataset

    from trainables.loop import run_trial
    from trainables.settings import Hyperparameters
    from trainables.workload import Workload

    x, y = tokens(64, 3, 5)
    workload = Workload(model=model, train_data=TensorDataset(x, y), loss=lm_loss)
    settings = spec_trial_settings(
        noise_method=method, noise_every=1, max_steps=steps, eval_every=4, target_value=-1.0
    )
    reports: list[dict[str, Any]] = []
    last = run_trial(settings, Hyperparameters(16, 0.1, 0.0, 0), reports.append, workload=workload)
    return last, reports


class PerExampleFriendly(SharedPositions):
    """SharedPositions with the positions given per example."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1]).expand(idx.shape)
        out: torch.Tensor = self.head(self.token(idx) + self.position(positions))
        return out


@pytest.mark.parametrize(
    ("model", "method", "reported"),
    [
        (PerExampleFriendly, "auto", "per_example"),
        (PerExampleFriendly, "micro_batch", "micro_batch"),
        (SharedPositions, "auto", "micro_batch"),  # found out on the first measured step
    ],
)
def test_a_trial_reports_what_measured_it(
    model: type[nn.Module], method: str, reported: str
) -> None:
    torch.manual_seed(0)
    last, reports = _trial(model(), method)
    # Step 0 reports what is to measure; the evaluations after, what did.
    assert [r[keys.NOISE_METHOD] for r in reports[1:]] == [reported] * 2
    assert math.isfinite(last[keys.B_SIMPLE]) and last[keys.B_SIMPLE] > 0


def test_asking_per_example_of_a_model_it_cannot_measure_is_a_trial_input_error() -> None:
    with pytest.raises(TrialInputError, match=r"per-example .* Embedding called on 3 rows"):
        _trial(SharedPositions(), "per_example")
    batch_norm = nn.Sequential(nn.Embedding(5, 4), nn.BatchNorm1d(3), nn.Linear(4, 5))
    with pytest.raises(TrialInputError, match="BatchNorm1d couples the examples"):
        _trial(batch_norm, "per_example")
    assert _trial(batch_norm, "auto")[0][keys.NOISE_METHOD] == "micro_batch"


# Several DDP workers: each worker's per-example norms against the all-reduced gradient.


def _ddp_per_example_worker(rank: int, world: int, port: int, batch_size: int, queue: Any) -> None:
    import os

    import torch.distributed as dist
    from _helpers import tiny_batch, tiny_loss, tiny_model

    from trainables.parts.forward import Forward
    from trainables.parts.world import World
    from trainables.steps import step_strategy

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = tiny_model()
        forward = Forward(model, list(model.parameters()), tiny_loss, contextlib.nullcontext)
        strategy = step_strategy(
            forward, World(rank, world), torch.device("cpu"), batch_size, 2, None, "auto", 1 << 20
        )
        local = batch_size // world
        x, y = tiny_batch(batch_size)
        pairs = []
        for _ in range(2):  # the first step verifies against the local gradient
            model.zero_grad(set_to_none=True)
            captured = strategy.backward(
                (x[rank * local : (rank + 1) * local], y[rank * local : (rank + 1) * local]),
                measure=True,
            )
            pairs.append(captured.pair)
        queue.put((rank, strategy.method, pairs))
    finally:
        dist.destroy_process_group()


def test_two_gloo_workers_measure_per_example_against_the_global_gradient() -> None:
    """Each worker's mean |g_i|² over its own examples; their mean is the one process's
    mean over the whole batch, and |G|² is the whole batch's."""
    from _helpers import run_gloo_workers, tiny_batch, tiny_loss, tiny_model

    batch_size = 16
    outputs = run_gloo_workers(_ddp_per_example_worker, 2, batch_size)
    model = tiny_model()
    single, _ = captured(model, lambda m, b: tiny_loss(m, b), tiny_batch(batch_size))
    full = sum(float(p.grad.double().square().sum()) for p in model.parameters())
    assert {method for _, method, _ in outputs} == {"per_example"}
    for step in range(2):
        pairs = [pairs[step] for _, _, pairs in outputs]
        assert all((p.b_small, p.b_big) == (1.0, 16.0) for p in pairs)
        mean_small = sum(p.sq_small for p in pairs) / 2
        assert mean_small == pytest.approx(float(single.mean()), rel=1e-5)
        assert all(p.sq_big == pytest.approx(full, rel=1e-5) for p in pairs)


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["transformer, tied head", "conv net"])
def test_per_example_norms_on_cuda_match_per_sample_gradients(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same formulas on CUDA tensors (TF32 off: the comparison is at float32)."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    model, loss_fn, batch = CASES[case]()
    model = model.cuda()
    batch = tuple(t.cuda() for t in batch)
    got, norms = captured(model, loss_fn, batch, parts=2)
    assert norms.problems == [] and got.device.type == "cuda"
    torch.testing.assert_close(got, per_sample_truth(model, loss_fn, batch), rtol=1e-4, atol=0)


def _ddp_fallback_worker(rank: int, world: int, port: int, queue: Any) -> None:
    import os

    import torch.distributed as dist

    from trainables.parts.forward import Forward
    from trainables.parts.world import World
    from trainables.steps import step_strategy

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = SharedPositions()
        forward = Forward(model, list(model.parameters()), lm_loss, contextlib.nullcontext)
        strategy = step_strategy(forward, World(rank, world), torch.device("cpu"), 8, 2)
        x, y = tokens(8, 3, 5)
        local = (x[rank * 4 : (rank + 1) * 4], y[rank * 4 : (rank + 1) * 4])
        pairs = []
        for _ in range(2):
            model.zero_grad(set_to_none=True)
            pairs.append(strategy.backward(local, measure=True).pair)
        queue.put((rank, strategy.method, [p is not None for p in pairs]))
    finally:
        dist.destroy_process_group()


def test_two_gloo_workers_fall_back_to_the_ddp_hook_together() -> None:
    """A model the hooks cannot measure (a position table without the batch dimension):
    on the first measured step both workers give up per-example norms, and measure by the
    DDP hook from the next step on."""
    from _helpers import run_gloo_workers

    outputs = run_gloo_workers(_ddp_fallback_worker, 2)
    assert sorted(outputs) == [
        (0, "worker_batches", [False, True]),
        (1, "worker_batches", [False, True]),
    ]
