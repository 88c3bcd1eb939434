"""Draw the demonstrations of each item with a seed, and build its full prompt."""

from __future__ import annotations

import random
from dataclasses import dataclass

from kogpt.errors import KoGPTError
from kogpt.evaluate.data import Dataset, Example
from kogpt.evaluate.templates import Template


@dataclass(frozen=True)
class Prompt:
    """An item under test, the demonstrations drawn for it, and the text the model reads."""

    example: Example
    demos: tuple[Example, ...]
    text: str


def draw(pool_size: int, shots: int, seed: int, index: int, exclude: int | None = None) -> list[int]:
    """Indices of `shots` distinct demonstrations for item `index`, never `exclude`.

    Each item has its own generator, seeded by (seed, index), so an item's demonstrations do not
    depend on `--limit` or on the other items.
    """
    rng = random.Random(f"{seed}:{index}")  # str seeds hash with SHA-512: the same on every run
    picked = rng.sample(range(pool_size), min(pool_size, shots + 1))
    return [i for i in picked if i != exclude][:shots]


def build(
    template: Template,
    data: Dataset,
    train: Dataset | None,
    shots: int,
    seed: int,
    limit: int | None = None,
) -> list[Prompt]:
    """The prompts of the first `limit` items of `data`, demonstrations drawn from `train`.

    Without `train` the demonstrations come from `data` itself, never the item under test.
    """
    pool = train.examples if train is not None else data.examples
    available = len(pool) - (0 if train is not None else 1)
    if shots < 0:
        raise KoGPTError("--shots must be 0 or more")
    if shots > available:
        source = train.path if train is not None else data.path
        raise KoGPTError(f"--shots {shots} needs {shots} demonstrations but {source} offers {available}")
    items = data.examples[:limit] if limit is not None else data.examples
    prompts = []
    for index, example in enumerate(items):
        exclude = None if train is not None else index
        demos = tuple(pool[i] for i in draw(len(pool), shots, seed, index, exclude))
        parts = [template.demonstration(d) for d in demos] + [template.context(example)]
        prompts.append(Prompt(example, demos, template.separator.join(parts)))
    return prompts
