"""Per-example gradients of one layer's parameters from its input and output gradient.

For a layer called on a batch of b examples with input x and output gradient g (both
batch-first), example i's gradient of a parameter depends on x[i] and g[i] alone. For a
Linear over a sequence, ∇W_i = Σ_t g_it a_itᵀ, and its squared norm can be formed
without the b·out·in tensor: |∇W_i|² = Σ_{t,s} (a_it·a_is)(g_it·g_is), the "ghost norm"
of fast per-example clipping (Goodfellow 2015; Li et al. 2022, "Large language models can
be strong differentially private learners", §4), which costs O(T²(in+out)) per example
instead of O(T·in·out). `square_norms` takes whichever is cheaper; `gradients`
instantiates them (a parameter used by several layers sums its uses before the norm).

Covered: Linear (any number of sequence dimensions), Conv1d/Conv2d (groups 1, zero
padding), Embedding, LayerNorm, RMSNorm and GroupNorm. Everything is computed in float32
and chunked over examples so that no intermediate holds more than CHUNK_ELEMENTS numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

CHUNK_ELEMENTS = 1 << 24  # 64 MB of float32 per intermediate
# A ghost norm is taken where its cost times this factor is at most the instantiated one's
# (tests flip the choice with it; both are exact).
GHOST_COST_FACTOR = 1.0
COVERED = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding, nn.LayerNorm, nn.RMSNorm, nn.GroupNorm,
)  # fmt: skip


def covers(module: nn.Module) -> str | None:
    """None where this module's own parameters are covered, else why they are not."""
    name = type(module).__name__
    if not isinstance(module, COVERED):
        return f"{name} (no per-example formula)"
    extra = set(parameter_names(module)) - {"weight", "bias"}
    if extra:  # a reparametrisation (weight_norm's weight_g, weight_v): not these formulas
        return f"{name} with parameter(s) {', '.join(sorted(extra))}"
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        if module.groups != 1:
            return f"{name} with groups {module.groups}"
        if module.padding_mode != "zeros":
            return f"{name} with padding_mode {module.padding_mode!r}"
    if isinstance(module, nn.Embedding) and (module.sparse or module.scale_grad_by_freq):
        return "Embedding with sparse or scale_grad_by_freq"
    return None


def chunks(b: int, per_example: int) -> list[slice]:
    """Slices of the batch whose intermediates hold at most CHUNK_ELEMENTS numbers."""
    rows = max(1, CHUNK_ELEMENTS // max(1, per_example))
    return [slice(lo, min(b, lo + rows)) for lo in range(0, b, rows)]


def _rows(x: torch.Tensor, b: int) -> torch.Tensor:
    """x as [b, T, features]: every dimension between the batch and the last is a
    sequence position."""
    return x.reshape(b, -1, x.shape[-1]).float()


def _outer_square_norms(g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """|Σ_t g_t a_tᵀ|² per example for g [b, T, o], a [b, T, i]: the ghost norm
    Σ_{t,s}(a_t·a_s)(g_t·g_s) or the instantiated sum, whichever costs less."""
    b, t, o = g.shape
    i = a.shape[-1]
    if t == 1:
        return _square_norms(g) * _square_norms(a)
    out = torch.empty(b, device=g.device)
    if t * (i + o) * GHOST_COST_FACTOR <= i * o:
        for rows in chunks(b, t * t):
            aa = torch.bmm(a[rows], a[rows].transpose(1, 2))
            gg = torch.bmm(g[rows], g[rows].transpose(1, 2))
            out[rows] = torch.linalg.vecdot(aa.flatten(1), gg.flatten(1))
    else:
        for rows in chunks(b, i * o):
            out[rows] = _square_norms(torch.bmm(g[rows].transpose(1, 2), a[rows]))
    return out


def _square_norms(per_example: torch.Tensor) -> torch.Tensor:
    """|x_i|² of every row of [b, …] in one fused reduction."""
    return torch.linalg.vector_norm(per_example.flatten(1), dim=1).square()


def _conv_patches(module: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The input patches each output position sees, [b, L, C_in·k…] (im2col)."""
    two_d = isinstance(module, nn.Conv2d)
    x = x.float() if two_d else x.float().unsqueeze(2)
    kernel = module.kernel_size if two_d else (1, *module.kernel_size)
    dilation = module.dilation if two_d else (1, *module.dilation)
    stride = module.stride if two_d else (1, *module.stride)
    if module.padding == "same":
        pads: list[int] = []
        for k, d in zip(reversed(kernel), reversed(dilation), strict=True):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        x = F.pad(x, pads)
    elif module.padding != "valid":
        padding = module.padding if two_d else (0, *module.padding)
        x = F.pad(x, [int(p) for p in reversed(padding) for _ in range(2)])
    # Strided views instead of F.unfold, whose CPU kernel loops over the examples.
    b, channels = x.shape[:2]
    for dim, (k, d, s) in enumerate(zip(kernel, dilation, stride, strict=True), start=2):
        x = x.unfold(dim, d * (k - 1) + 1, s)
    x = x[..., :: dilation[0], :: dilation[1]]  # [b, C, H', W', kh, kw]
    positions = x.shape[2] * x.shape[3]
    return x.permute(0, 2, 3, 1, 4, 5).reshape(b, positions, channels * kernel[0] * kernel[1])


def _normalized(module: nn.LayerNorm | nn.RMSNorm | nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """The layer's input normalised, before its affine parameters."""
    x = x.float()
    if isinstance(module, nn.LayerNorm):
        return F.layer_norm(x, module.normalized_shape, eps=module.eps)
    if isinstance(module, nn.RMSNorm):
        return F.rms_norm(x, module.normalized_shape, eps=module.eps)
    return F.group_norm(x, module.num_groups, eps=module.eps)


def _affine_reduce(
    module: nn.LayerNorm | nn.RMSNorm | nn.GroupNorm, values: torch.Tensor
) -> torch.Tensor:
    """Sum `values` [b, …] over every dimension the affine parameter is shared across:
    [b, *param.shape]."""
    if isinstance(module, nn.GroupNorm):  # [b, C, *spatial], parameter [C]
        return values.reshape(values.shape[0], values.shape[1], -1).sum(-1)
    shape = tuple(module.normalized_shape)
    return values.reshape(values.shape[0], -1, *shape).sum(1)


def gradients(module: nn.Module, name: str, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Every example's gradient of the parameter `name` of `module` from one call with
    input x and output gradient g: [b, *parameter.shape], float32."""
    b = g.shape[0]
    if isinstance(module, nn.Linear):
        rows = _rows(g, b)
        if name == "bias":
            return rows.sum(1)
        return torch.bmm(rows.transpose(1, 2), _rows(x, b))
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        rows = g.float().reshape(b, g.shape[1], -1)
        if name == "bias":
            return rows.sum(-1)
        per_example = torch.bmm(rows, _conv_patches(module, x))
        return per_example.reshape(b, *module.weight.shape)
    if isinstance(module, nn.Embedding):
        return _embedding_gradients(module, x, _rows(g, b))
    if isinstance(module, nn.LayerNorm | nn.RMSNorm | nn.GroupNorm):
        if name == "bias":
            return _affine_reduce(module, g.float())
        return _affine_reduce(module, g.float() * _normalized(module, x))
    raise TypeError(f"no per-example gradient for {type(module).__name__}")


def _embedding_gradients(module: nn.Embedding, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """[b, V, d]: each example's rows of g added at its token ids (padding_idx gets none)."""
    b, t, d = g.shape
    ids = x.reshape(b, t)
    if module.padding_idx is not None:
        g = g * (ids != module.padding_idx).unsqueeze(-1)
    v = module.num_embeddings
    flat = (torch.arange(b, device=ids.device).unsqueeze(1) * v + ids).reshape(-1)
    out = torch.zeros(b * v, d, device=g.device)
    out.index_add_(0, flat, g.reshape(-1, d))
    return out.reshape(b, v, d)


def gradient_sum(module: nn.Module, name: str, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Σ_i of every example's gradient of the parameter `name` (the batch gradient as the
    layer's hooks see it), a chunk of examples at a time: [*parameter.shape]."""
    b = g.shape[0]
    per_example = _numel(module, name) + _patch_elements(module, x)
    total = torch.zeros(getattr(module, name).shape, device=g.device)
    for rows in chunks(b, per_example):
        total += gradients(module, name, x[rows], g[rows]).sum(0)
    return total


def _patch_elements(module: nn.Module, x: torch.Tensor) -> int:
    """Numbers one example's input takes in the layer's patches (conv: k·k copies)."""
    copies = math.prod(module.kernel_size) if isinstance(module, nn.Conv1d | nn.Conv2d) else 1
    return int(x[:1].numel()) * copies


def square_norms(
    module: nn.Module, names: list[str], x: torch.Tensor, g: torch.Tensor
) -> torch.Tensor:
    """Σ over the parameters `names` of `module` (each used once in this pass) of
    |∇_i|² per example [b], without instantiating the gradients where a ghost norm is
    cheaper. A Linear applied once per example gives |g_i|²(|a_i|² + 1) for weight and
    bias together."""
    b = g.shape[0]
    if isinstance(module, nn.Linear):
        a, rows = _rows(x, b), _rows(g, b)
        if a.shape[1] == 1 and sorted(names) == ["bias", "weight"]:
            return _square_norms(rows) * (_square_norms(a) + 1.0)
    if len(names) > 1:
        return torch.stack([square_norms(module, [name], x, g) for name in names]).sum(0)
    (name,) = names
    if isinstance(module, nn.Linear) and name == "weight":
        return _outer_square_norms(_rows(g, b), _rows(x, b))
    if isinstance(module, nn.Conv1d | nn.Conv2d) and name == "weight":
        rows = g.float().reshape(b, g.shape[1], -1).transpose(1, 2)
        size = _patch_elements(module, x)
        parts = [
            _outer_square_norms(rows[part], _conv_patches(module, x[part]))
            for part in chunks(b, size)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    if isinstance(module, nn.Embedding):
        return _embedding_square_norms(module, x, _rows(g, b))
    return _chunked(lambda rows: gradients(module, name, x[rows], g[rows]), b, _numel(module, name))


def _embedding_square_norms(module: nn.Embedding, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Σ_{t,s} [x_t = x_s](g_t·g_s) per example (a ghost norm over token ids), or the
    instantiated [b, V, d] rows, whichever costs less."""
    b, t, d = g.shape
    ids = x.reshape(b, t)
    if t * t * GHOST_COST_FACTOR > module.num_embeddings:
        return _chunked(
            lambda rows: _embedding_gradients(module, ids[rows], g[rows]),
            b,
            module.num_embeddings * d,
        )
    if module.padding_idx is not None:
        g = g * (ids != module.padding_idx).unsqueeze(-1)
    out = torch.empty(b, device=g.device)
    for rows in chunks(b, t * t):
        same = ids[rows].unsqueeze(2) == ids[rows].unsqueeze(1)
        gg = torch.bmm(g[rows], g[rows].transpose(1, 2))
        out[rows] = torch.linalg.vecdot(gg.flatten(1), same.flatten(1).to(gg.dtype))
    return out


def _numel(module: nn.Module, name: str) -> int:
    parameter = getattr(module, name)
    return int(parameter.numel())


def _chunked(per_example: Callable[[slice], torch.Tensor], b: int, size: int) -> torch.Tensor:
    """|∇_i|² per example from instantiated gradients, a chunk of examples at a time."""
    parts = [_square_norms(per_example(rows)) for rows in chunks(b, size)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def parameter_names(module: nn.Module) -> list[str]:
    """The names of this module's own trainable parameters ('weight', 'bias')."""
    return [name for name, p in module.named_parameters(recurse=False) if p.requires_grad]
