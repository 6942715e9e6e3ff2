"""README's "Architecture" names only modules that exist, and the arrows it states hold."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def architecture_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Architecture", 1)[1]
    return section.split("```", 2)[1].splitlines()


def test_every_package_and_module_the_architecture_names_exists() -> None:
    named: list[Path] = []
    package = ROOT
    for line in architecture_block():
        head = line[:25].strip()
        if head:  # a new row: a package or a module, relative to trainables/ when indented
            base = ROOT / "trainables" if line.startswith("  ") else ROOT
            package = base / head
            named.append(package)
        folder = package if package.suffix != ".py" else package.parent
        for module in re.findall(r"\b([a-z_]+(?:/[a-z_]+)*\.py)\b", line[25:]):
            nested, beside = folder / module, folder.parent / module  # workload.py: beside
            named.append(beside if beside.exists() and not nested.exists() else nested)
    missing = [str(path.relative_to(ROOT)) for path in named if not path.exists()]
    assert not missing
    assert len(named) > 40  # the block was read


def imports_of(package: str) -> set[str]:
    """The top-level packages of `tuner` and `trainables` that `package` imports."""
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for match in re.finditer(r"^\s*from (tuner|trainables)\.(\w+)", path.read_text(), re.M):
            found.add(f"{match.group(1)}/{match.group(2)}")
    return found - {package}


def test_the_stated_arrows_hold() -> None:
    """cli → cluster, runtime → strategy, results → config → trainables → theory: no
    package imports one listed above it, and the workers import only tuner.theory."""
    order = [
        "tuner/cluster", "tuner/runtime", "tuner/strategy", "tuner/results", "tuner/config",
    ]  # fmt: skip
    for i, package in enumerate(order):
        above = set(order[:i]) | {"tuner/cli"}
        assert not imports_of(package) & above, package
    assert {p for p in imports_of("trainables") if p.startswith("tuner/")} == {"tuner/theory"}
    assert not {p for p in imports_of("tuner/theory") if p != "tuner/theory"}
