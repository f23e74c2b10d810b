"""The data change of the README's `textclf diff` explanation trial, made in a clone.

Moves 40 % of the `pos` sample reviews that contain 不错 to `neg.txt` (with `--unique`: only those
whose text occurs once in the corpus, so none becomes a label conflict) and adds 150 reviews
(each two reviews of one label joined). It rewrites `data/sample/reviews-zh/*.txt` of `--repo`,
so it refuses the repository it is run from and one with uncommitted changes:

    git clone . /tmp/trial && cd /tmp/trial && cp -r <this repo>/.dvc/cache .dvc/ && dvc checkout
    python bench/explain_trial.py --repo /tmp/trial --unique
    cd /tmp/trial && dvc repro && git commit -qam trial && textclf diff HEAD~1 HEAD --json
"""

from __future__ import annotations

import argparse
import collections
import random
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", required=True, help="a clone to change (never this repository)")
    ap.add_argument("--unique", action="store_true", help="move only reviews whose text occurs once")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    root = Path(args.repo).resolve()
    if root == HERE:
        print(
            "explain_trial.py: give a clone, not this repository (its sample data would be rewritten)", file=sys.stderr
        )
        return 2
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True)
    if dirty.returncode or dirty.stdout.strip():
        print(f"explain_trial.py: {root} is not a clean git clone", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    d = root / "data/sample/reviews-zh"
    pos = (d / "pos.txt").read_text(encoding="utf-8").splitlines()
    neg = (d / "neg.txt").read_text(encoding="utf-8").splitlines()
    count = collections.Counter(t.strip() for t in pos + neg)
    cand = [i for i, t in enumerate(pos) if "不错" in t and (not args.unique or count[t.strip()] == 1)]
    move = set(rng.sample(cand, int(0.4 * len(cand))))
    kept = [t for i, t in enumerate(pos) if i not in move]
    added_pos = [rng.choice(kept[:2000]) + " " + rng.choice(kept[:2000]) for _ in range(75)]
    added_neg = [rng.choice(neg[:2000]) + " " + rng.choice(neg[:2000]) for _ in range(75)]
    (d / "pos.txt").write_text("\n".join(kept + added_pos) + "\n", encoding="utf-8")
    (d / "neg.txt").write_text("\n".join(neg + [pos[i] for i in sorted(move)] + added_neg) + "\n", encoding="utf-8")
    print(f"moved {len(move)} of {len(cand)} pos reviews with 不错 to neg.txt; added 150 reviews")
    return 0


if __name__ == "__main__":
    sys.exit(main())
