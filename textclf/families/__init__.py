"""The model families textclf trains, one module each, by name: `train.model` and
`train.autotune.families` take their values from `FAMILIES` (textclf.params), and
`textclf.families.registry.family(name)` returns the family's `ModelFamily` object
(textclf.families.base), the one place the rest of the code asks what a family builds, how it
trains, what autotune may change and how it exports:

- linear: TF-IDF logistic regression + an NB-scaled head, one convex fit (textclf.families.linear);
- bag: fastText-style EmbeddingBag, trained by the epoch loop (textclf.families.bag);
- cnn: TextCNN (Kim 2014), trained by the epoch loop (textclf.families.cnn);
- encoder: a pretrained BERT-architecture encoder from a local Hugging Face folder, frozen beside the
  linear heads or fine-tuned (textclf.families.encoder).

A new family is a module here ending in `FAMILY = <a ModelFamily subclass>()`, its name in
`FAMILIES` and in the registry's import line, and its params section in textclf.params (the one
exception to "one module": params load without torch, and every family module imports torch).

Import-light on purpose (no torch): textclf.params reads the names from here; the family modules
are imported by the registry, the first time one is asked for.
"""

from __future__ import annotations

FAMILIES: tuple[str, ...] = ("linear", "bag", "cnn", "encoder")
# families that read the raw text as well as the cleaned tokens (prediction feeds them both)
TEXT_FAMILIES: frozenset[str] = frozenset({"encoder"})
