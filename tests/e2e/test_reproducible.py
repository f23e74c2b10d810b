"""Reproducible rebuilds (issue 13): two fresh copies of the project build byte-identical
pipelines; a clone of this repository rebuilds exactly the committed dvc.lock and outputs; the
corpus and the stopword list are dependencies DVC watches."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.fixtures import ROOT, env, make_repo, run

pytestmark = pytest.mark.slow
FAST = {"train": {"autotune": {"trials": 4}}}


def _clone_of_the_working_tree(clone):
    """A clone of HEAD with the working tree's uncommitted changes committed on top: the test
    checks the code it runs in, not only what was committed before."""
    import shutil

    run(["git", "clone", "-q", str(ROOT), str(clone)], clone.parent)
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT).stdout
    for name in filter(None, listed.split("\0")):
        src, dest = ROOT / name, clone / name
        if src.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        elif not src.exists() and dest.exists():
            dest.unlink()
    run(["git", "add", "-A"], clone)
    if run(["git", "status", "--porcelain"], clone).stdout:
        run(["git", "commit", "-q", "-m", "the working tree under test"], clone)
    return clone


def test_a_clone_of_this_repository_rebuilds_the_committed_lock_and_outputs(tmp_path):
    """`git clone` + `dvc repro`: nothing in git changes (dvc.lock, metrics, plots), and
    `dvc status` is clean. The committed lock names the corpus with its hash and size. This is
    the two-clone comparison: the committed lock was built in another clone, on another machine
    (what varies by run, time and versions, is in reports/train/run.json, outside any hash)."""
    clone = _clone_of_the_working_tree(tmp_path / "clone")
    (clone / "data/raw").mkdir(exist_ok=True)
    lock = (clone / "dvc.lock").read_text()
    assert "path: data/sample/reviews-zh" in lock and "nfiles: 2" in lock
    run(["dvc", "repro"], clone, timeout=1200)
    status = run(["git", "status", "--porcelain"], clone).stdout
    assert status == "", status + run(["git", "diff", "--stat"], clone).stdout
    assert "up to date" in run(["dvc", "status"], clone).stdout.lower()
    run_info = json.loads((clone / "reports/train/run.json").read_text())
    assert run_info["created"] and "torch" in run_info["versions"]  # recorded, outside anything hashed


def test_the_corpus_and_the_stopword_list_are_dependencies(tmp_path):
    repo = make_repo(tmp_path / "repo", params=FAST)
    run(["dvc", "repro", "clean"], repo)
    assert "up to date" in run(["dvc", "status", "clean"], repo).stdout.lower()
    with open(repo / "data/raw/pos.txt", "a", encoding="utf-8") as f:
        f.write("一条新的评论，很好\n")
    status = run(["dvc", "status", "ingest"], repo).stdout
    assert "ingest:" in status and "modified:" in status and "data/raw" in status
    run(["dvc", "repro", "clean"], repo)
    with open(repo / "data/stopwords.txt", "a", encoding="utf-8") as f:
        f.write("房间\n")
    status = run(["dvc", "status"], repo).stdout
    assert "clean:" in status and "data/stopwords.txt" in status
    assert "train:" in status  # its words are in the bundle


def test_the_readmes_own_data_steps_work_verbatim_on_a_fresh_clone(tmp_path):
    """README "Your own data": files under data/raw, `dvc add data/raw`, commit, point
    ingest.source at it, `dvc repro`."""
    import yaml

    from tests.fixtures import make_docs, write_text_dir

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(ROOT), str(clone)], tmp_path)
    write_text_dir(clone / "data/raw", make_docs(300, seed=5))
    run(["dvc", "add", "data/raw"], clone)
    run(["git", "add", "data/raw.dvc", "data/.gitignore"], clone)
    run(["git", "commit", "-qm", "my corpus"], clone)
    params = yaml.safe_load((clone / "params.yaml").read_text(encoding="utf-8"))
    params["ingest"]["source"] = "data/raw"
    params["train"]["autotune"]["trials"] = 4  # test time; the steps are the README's
    (clone / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    run(["dvc", "repro"], clone, timeout=900)
    stats = json.loads((clone / "reports/data/ingest.json").read_text())
    assert stats["read"] == 300 and stats["kept"] > 250
    assert "path: data/raw" in (clone / "dvc.lock").read_text()


def _train_outputs(repo) -> dict[str, str]:
    """The digests of what train writes and git or DVC hashes: the bundle's files and the train
    reports (run.json, which records time and host, is outside every hash)."""
    from textclf.artifacts import sha256_file

    files = sorted((repo / "models/classifier").rglob("*")) + sorted((repo / "reports/train").rglob("*"))
    return {str(f.relative_to(repo)): sha256_file(f) for f in files if f.is_file() and f.name != "run.json"}


def test_train_gives_one_bundle_across_kernel_paths_and_thread_counts(tmp_path):
    """Issue 24: the bundle and reports/train/* are a function of the data and params alone.
    The train stage under ATen's baseline kernels on one thread, and under the CPU's widest
    (avx512 where it has it, else avx2) on two, with autotune on (its search stops by trials):
    byte-identical. `train.cpu_kernels: portable` (the default) is what makes it so."""
    import torch

    widest = "avx512" if torch.backends.cpu.get_cpu_capability() == "AVX512" else "avx2"
    repo = make_repo(tmp_path / "repo", params={"train": {"autotune": {"trials": 3, "budget_s": 600}}})
    run(["dvc", "repro", "vocab"], repo)
    digests = []
    for capability, threads in (("default", "1"), (widest, "2")):
        proc = subprocess.run(
            [sys.executable, "-m", "stages.train"],
            cwd=repo,
            env={**env(), "ATEN_CPU_CAPABILITY": capability, "OMP_NUM_THREADS": threads},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads((repo / "reports/train/autotune.json").read_text())["stopped_by"] == "trials"
        kernels = json.loads((repo / "reports/train/run.json").read_text())["kernels"]
        assert kernels["pinned"] and kernels["capability"] == "DEFAULT" and kernels["threads"] == 1, kernels
        digests.append(_train_outputs(repo))
    assert digests[0] and digests[0] == digests[1]
