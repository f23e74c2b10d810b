"""`pip install .` installs one package, `textclf`, with its resources; stages/ and flows/ stay in
the project (generic top-level names never land in site-packages)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pip_install_into_an_empty_target_installs_only_textclf(tmp_path):
    import shutil

    src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info next to pyproject.toml
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", ".dvc", "data", "models", "reports", "__pycache__", "build", "*.egg-info", ".pytest_cache"
        ),
    )
    target = tmp_path / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    top = {p.name for p in target.iterdir() if not p.name.endswith((".dist-info", ".egg-info")) and p.name != "bin"}
    assert top == {"textclf"}, top
    assert (target / "textclf/resources/stopwords_zh.txt").is_file()
    assert (target / "textclf/resources/stopwords_en.txt").is_file()
    assert (target / "textclf/training/run.py").is_file() and (target / "textclf/diff/core.py").is_file()
