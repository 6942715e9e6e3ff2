"""How far the grid's own front moves between training seeds: the floor under "the front
within 10% of the grid's".

    python bench/front_noise.py --spec bench/specs/teacher_student.yaml --seeds 3

The spec's grid is recorded once per training seed (seed 0 is `bench/curves.py`'s
recording, seeds 1 … k−1 land beside it as `<name>-seed<s>.parquet`), with the real
training loop. For every batch size it prints each seed's fewest steps to the target and
the lr that took them; then, for every ordered pair of seeds, the worst ratio at any batch
size of one grid's front over the other's. A rerun of the exhaustive grid that differs only
in its training seed is the best any search can do; where that ratio exceeds 1.10, a
search judged by "within 10% of the grid's front at every batch size" is judged against
the luck of one seed, not against the optimum.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curves import load_or_record
from replay import Curves

from tuner.config.spec import parse_spec


def worst_ratio(front: dict[int, float], reference: dict[int, float]) -> tuple[float, int]:
    """max over batch sizes of front / reference, and the batch size where it is."""
    return max((front.get(b, float("inf")) / s, b) for b, s in reference.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    base = yaml.safe_load(Path(args.spec).read_text())
    base.setdefault("search", {})["algorithm"] = "grid"
    spec = parse_spec(base)
    curves = [Curves(load_or_record(spec, args.processes, seed=s)) for s in range(args.seeds)]
    fronts = [c.best_configs() for c in curves]
    print(f"{spec.name}: fewest steps to target per batch size (lr), per training seed")
    for b in sorted(fronts[0]):
        cells = [f"{f[b][1]:.0f} (lr {f[b][0][1]:g})" if b in f else "-" for f in fronts]
        print(f"  B={b}: " + " | ".join(cells))
    steps = [c.best_steps() for c in curves]
    print("grid seed j's front over grid seed i's, worst batch size:")
    for i, j in itertools.permutations(range(args.seeds), 2):
        ratio, b = worst_ratio(steps[j], steps[i])
        print(f"  {j} vs {i}: {ratio:.2f} at B={b}")


if __name__ == "__main__":
    main()
