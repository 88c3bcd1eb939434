"""Draw the demonstrations of each item with a seed, and build its full prompt."""

from __future__ import annotations

import logging
import random
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass

from kogpt.errors import KoGPTError
from kogpt.evaluate.data import Dataset, Example
from kogpt.evaluate.templates import Template

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompt:
    """An item under test, the demonstrations drawn for it, and the text the model reads."""

    example: Example
    demos: tuple[Example, ...]
    text: str


def draw(pool_size: int, shots: int, seed: int, index: int, exclude: int | Collection[int] | None = None) -> list[int]:
    """Indices of `shots` distinct demonstrations for item `index`, never one in `exclude`.

    Each item has its own generator, seeded by (seed, index), so an item's demonstrations do not
    depend on `--limit` or on the other items.
    """
    excluded = set() if exclude is None else {exclude} if isinstance(exclude, int) else set(exclude)
    rng = random.Random(f"{seed}:{index}")  # str seeds hash with SHA-512: the same on every run
    picked = rng.sample(range(pool_size), min(pool_size, shots + len(excluded)))
    return [i for i in picked if i not in excluded][:shots]


def content(example: Example) -> tuple[tuple[str, str], ...]:
    """What an item says, to find its copies: its fields, NFC-normalised, runs of spaces as one."""
    fields = example.fields.items()
    return tuple(sorted((key, unicodedata.normalize("NFC", " ".join(value.split()))) for key, value in fields))


def build(
    template: Template,
    data: Dataset,
    train: Dataset | None,
    shots: int,
    seed: int,
    limit: int | None = None,
) -> list[Prompt]:
    """The prompts of the first `limit` items of `data`, demonstrations drawn from `train`.

    Without `train` the demonstrations come from `data` itself. Either way a demonstration never
    says what the item under test says: copies of it (duplicated rows, or `train` holding the
    test items) are excluded by content.
    """
    if shots < 0:
        raise KoGPTError("--shots must be 0 or more")
    pool = train.examples if train is not None else data.examples
    source = train.path if train is not None else data.path
    copies: dict[tuple, list[int]] = {}
    for i, example in enumerate(pool):
        copies.setdefault(content(example), []).append(i)
    items = data.examples[:limit] if limit is not None else data.examples
    prompts, repeated = [], 0
    for index, example in enumerate(items):
        exclude = copies.get(content(example), []) if shots else []
        if train is None and index not in exclude:
            exclude = [*exclude, index]
        repeated += len(exclude) > (0 if train is not None else 1)
        available = len(pool) - len(exclude)
        if shots > available:
            raise KoGPTError(
                f"--shots {shots} needs {shots} demonstrations but {source} offers {available} "
                f"that differ from the item on line {example.line}"
            )
        demos = tuple(pool[i] for i in draw(len(pool), shots, seed, index, exclude))
        parts = [template.demonstration(d) for d in demos] + [template.context(example)]
        prompts.append(Prompt(example, demos, template.separator.join(parts)))
    if repeated:
        log.warning("%s repeats the text of %d items under test; no item is shown its own copy", source, repeated)
    return prompts
