"""A small decoder-only transformer language model on text every machine has: the Python
standard library's own source files, byte by byte (character level; no download).

The corpus is the files of `modules` (paths under the standard library, read in order and
joined) cut to `max_chars` bytes: the first 90% trains, the last 10% evaluates. An example
is a window of `block_size` bytes and the same window shifted by one (the next-byte
targets); training windows start anywhere in the training part, drawn i.i.d. as every
noisetune batch is, so a batch of B examples holds B·block_size tokens. The reported
`loss` is the mean cross-entropy per byte (nats) over `n_eval` fixed, non-overlapping
windows of the eval part; `bits_per_byte` is the same in bits.

The model is nanoGPT's GPT in small: token and position embeddings, `n_layer` pre-norm
blocks of causal self-attention (`n_head` heads, torch's scaled_dot_product_attention) and
a GELU MLP (4× wide), a final LayerNorm and a head tied to the token embedding; no dropout
and no BatchNorm (the noise-scale estimator needs independent examples). Weights are
initialised as nanoGPT does (normal, std 0.02; residual projections 0.02/√(2·n_layer)),
from `torch.manual_seed(seed)` as the loop sets it for the build.

The text depends on the Python version's standard library: say which in results.
"""

from __future__ import annotations

import math
import sysconfig
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from trainables.workload import Workload
from trainables.workloads._args import float_arg, int_arg, merge_args

# Pure-Python modules present in CPython 3.10-3.14, chosen for plain code and docstrings.
MODULES = (
    "textwrap.py", "string.py", "shlex.py", "difflib.py", "fractions.py", "heapq.py",
    "bisect.py", "calendar.py", "csv.py", "dataclasses.py", "functools.py", "glob.py",
    "ipaddress.py", "json/__init__.py", "json/decoder.py", "json/encoder.py", "locale.py",
    "operator.py", "pprint.py", "queue.py", "random.py", "sched.py", "statistics.py",
    "tokenize.py", "types.py", "uuid.py", "weakref.py", "zipfile/__init__.py", "argparse.py",
)  # fmt: skip

DEFAULTS: dict[str, Any] = {
    "max_chars": 400_000,
    "block_size": 64,
    "n_layer": 2,
    "n_head": 4,
    "n_embd": 64,
    "n_eval": 256,
    "eval_fraction": 0.1,
}
VOCAB = 256  # bytes
BITS_PER_BYTE = "bits_per_byte"

_int_arg = partial(int_arg, "char_transformer")
_float_arg = partial(float_arg, "char_transformer")


def stdlib_text(max_chars: int, modules: tuple[str, ...] = MODULES) -> bytes:
    """The standard library files of `modules` joined, cut to `max_chars` bytes."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for name in modules:
        path = root / name
        if not path.is_file():
            continue
        data = path.read_bytes()
        parts.append(data)
        total += len(data)
        if total >= max_chars:
            break
    text = b"\n".join(parts)[:max_chars]
    if len(text) < 10_000:
        raise FileNotFoundError(f"the standard library under {root} holds too little source")
    return text


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        shape = (b, t, self.n_head, c // self.n_head)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.proj(F.gelu(self.fc(self.ln_2(x))))


class CharGPT(nn.Module):
    """nanoGPT's GPT, small, on bytes."""

    def __init__(self, block_size: int, n_layer: int, n_head: int, n_embd: int) -> None:
        super().__init__()
        self.token = nn.Embedding(VOCAB, n_embd)
        self.position = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, VOCAB, bias=False)
        self.head.weight = self.token.weight  # weight tying
        for name, parameter in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(parameter, 0.0, 0.02 / math.sqrt(2 * n_layer))
            elif parameter.dim() >= 2:
                nn.init.normal_(parameter, 0.0, 0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(parameter)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        # Positions per example (a view, no copy): the position table's gradient is then
        # per example too, which per-example noise measurement needs (DESIGN.md §1).
        positions = torch.arange(idx.shape[1], device=idx.device).expand(idx.shape)
        x = self.token(idx) + self.position(positions)
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.head(self.ln_f(x))
        return logits


def _loss(model: nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))


def windows(data: torch.Tensor, block_size: int, step: int = 1) -> TensorDataset:
    """(input, next-byte target) windows of `block_size` starting every `step` bytes; views
    of `data`, no copy until a batch gathers them."""
    x = data[:-1].unfold(0, block_size, step)
    y = data[1:].unfold(0, block_size, step)
    return TensorDataset(x, y)


def build(args: Mapping[str, Any]) -> Workload:
    """The workload; `args` override DEFAULTS (see the module docstring)."""
    merged = merge_args("char_transformer", DEFAULTS, args)
    block_size = _int_arg("block_size", merged["block_size"], 2)
    n_head = _int_arg("n_head", merged["n_head"], 1)
    n_embd = _int_arg("n_embd", merged["n_embd"], n_head)
    if n_embd % n_head:
        raise ValueError(f"char_transformer: n_embd {n_embd} is not divisible by n_head {n_head}")
    n_layer = _int_arg("n_layer", merged["n_layer"], 1)
    n_eval = _int_arg("n_eval", merged["n_eval"], 1)
    fraction = _float_arg("eval_fraction", merged["eval_fraction"], 0.0)
    if not 0.0 < fraction < 0.5:
        raise ValueError(f"char_transformer: eval_fraction must be in (0, 0.5), got {fraction}")
    text = stdlib_text(_int_arg("max_chars", merged["max_chars"], 10_000))
    data = torch.tensor(list(text), dtype=torch.long)
    split = int(len(data) * (1 - fraction))
    train = windows(data[:split], block_size)
    held_out = windows(data[split:], block_size, step=block_size)
    if len(held_out) < n_eval:
        raise ValueError(
            f"char_transformer: the eval part holds {len(held_out)} windows of {block_size} "
            f"bytes, fewer than n_eval {n_eval}"
        )
    eval_data = TensorDataset(*(t[:n_eval] for t in held_out.tensors))
    model = CharGPT(block_size, n_layer, n_head, n_embd)

    def metrics(model: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            x, y = (t.to(next(model.parameters()).device) for t in eval_data.tensors)
            return {BITS_PER_BYTE: float(_loss(model, (x, y))) / math.log(2)}

    return Workload(model=model, train_data=train, loss=_loss, eval_data=eval_data, metrics=metrics)
