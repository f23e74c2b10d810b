"""`family(name)`: the `ModelFamily` object (textclf.families.base) of a family in `FAMILIES`.

Apart from textclf.families (the names, import-light) so that what imports the names does not
import torch; the family modules are imported on the first lookup, all of them, by name here so
that each DVC stage's code deps (its import closure, tests/stages/test_pipeline_declaration.py)
list every family the stage may run.
"""

from __future__ import annotations

from functools import cache

from textclf.families import FAMILIES


@cache
def _registry() -> dict:
    from textclf.families import bag, cnn, encoder, linear

    found = {m.FAMILY.name: m.FAMILY for m in (linear, bag, cnn, encoder)}
    if tuple(found) != FAMILIES:
        raise RuntimeError(f"textclf.families.FAMILIES {FAMILIES} and the family modules {tuple(found)} disagree")
    return found


def family(name: str):
    """The family called `name`; a ValueError naming the known ones otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model type {name!r} (known: {', '.join(FAMILIES)})")
    return _registry()[name]
