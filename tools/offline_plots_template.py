"""Build .dvc/plots/offline.html: the page `dvc plots show` fills (`.dvc/config` names it as
`plots.html_template`), with Vega, Vega-Lite and Vega-Embed inlined from their npm packages.

DVC's own page loads those three scripts from a CDN, so on a machine without internet the plots
stay blank. This template has no `{scripts}` placeholder (where DVC would put the CDN tags) and
no address to fetch: everything it needs is in the file. The versions are the ones DVC's renderer
(dvc-render) asks the CDN for, so the plots draw exactly as they would online.

A maintainer's tool (it needs the npm registry): `python tools/offline_plots_template.py`.
Each tarball is checked against the sha512 pinned below before a byte of it is used.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / ".dvc" / "plots" / "offline.html"
# package, version, the file its build ships for a <script> tag, npm's sha512 of the tarball
PACKAGES = [
    (
        "vega",
        "5.20.2",
        "build/vega.min.js",
        "qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw==",
    ),
    (
        "vega-lite",
        "5.2.0",
        "build/vega-lite.min.js",
        "Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw==",
    ),
    (
        "vega-embed",
        "6.18.2",
        "build/vega-embed.min.js",
        "wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg==",
    ),
]
# dvc-render fills these by plain text replacement: none may appear in the inlined code
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot (offline: Vega inlined)</title>
    <!-- Built by tools/offline_plots_template.py; do not edit by hand.
{credits}
    -->
{scripts_inline}
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def fetch(work: Path, name: str, version: str, member: str, sha512: str) -> tuple[str, str]:
    """(the script, its licence text) from the npm tarball of name@version, checked first."""
    out = subprocess.run(
        ["npm", "pack", f"{name}@{version}", "--silent", "--pack-destination", str(work)],
        capture_output=True,
        text=True,
        check=True,
    )
    tarball = work / out.stdout.strip().splitlines()[-1]
    got = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if got != sha512:
        sys.exit(f"{name}@{version}: sha512 {got} is not the pinned {sha512}; refusing to use it")
    with tarfile.open(tarball) as tar:
        script = tar.extractfile(f"package/{member}").read().decode("utf-8")
        licence = tar.extractfile("package/LICENSE").read().decode("utf-8")
    for bad in (*PLACEHOLDERS, "</script"):
        if bad in script:
            sys.exit(f"{name}@{version}: {member} contains {bad!r}; it cannot be inlined")
    return script, licence


def build() -> str:
    # BSD-3 for all three: each copyright notice kept, the shared conditions written once
    parts, conditions = [], {}  # conditions text -> [(file, its copyright notice)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, version, member, sha512 in PACKAGES:
            script, licence = fetch(Path(tmp), name, version, member, sha512)
            notice, _, rest = licence.strip().partition("Redistribution and use")
            conditions.setdefault("Redistribution and use" + rest if rest else "", []).append(
                (f"{name}@{version} {member}", notice.strip())
            )
            parts.append(f"    <!-- {name}@{version} -->\n    <script>{script}</script>")
    credits = [
        "\n".join(f"{file}: {notice}" for file, notice in files) + f"\nunder these terms:\n{text}\n"
        for text, files in conditions.items()
    ]
    # the inlined code last, so no later replacement can touch it
    return PAGE.replace("{credits}", "\n".join(credits).replace("-->", "- ->")).replace(
        "{scripts_inline}", "\n".join(parts)
    )


def main() -> None:
    TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    TEMPLATE.write_text(build(), encoding="utf-8")
    print(f"wrote {TEMPLATE.relative_to(ROOT)} ({TEMPLATE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
