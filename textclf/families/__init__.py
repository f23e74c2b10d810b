"""The model families textclf trains, by name: `train.model` and `train.autotune.families` take
their values from `FAMILIES` (textclf.params), and each family's code sits behind its name.

Import-light on purpose (no torch): textclf.params reads the names from here.

- linear: TF-IDF logistic regression + an NB-scaled head, one convex fit (textclf.model.LinearModel,
  textclf.training.linear);
- bag: fastText-style EmbeddingBag, trained by the epoch loop (textclf.model.BagModel, textclf.training.loop);
- cnn: TextCNN (Kim 2014), trained by the epoch loop (textclf.model.CNNModel, textclf.training.loop);
- encoder: a pretrained BERT-architecture encoder from a local Hugging Face folder, frozen beside the
  linear heads or fine-tuned (textclf.families.encoder).

The encoder family is the first written as one module (params aside: every params section lives
in textclf.params); moving linear, bag and cnn into modules of their own is the open half of
issue 23.
"""

FAMILIES: tuple[str, ...] = ("linear", "bag", "cnn", "encoder")
# families that read the raw text as well as the cleaned tokens (prediction feeds them both)
TEXT_FAMILIES: frozenset[str] = frozenset({"encoder"})
