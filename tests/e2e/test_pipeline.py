"""The whole DVC pipeline on a small fixture corpus, in a temp copy of the project."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tests.fixtures import env, make_repo, run, wait_while_running

pytestmark = pytest.mark.slow
STAGES = ["ingest", "clean", "split", "vocab", "baseline", "train", "evaluate"]
FAST = {"train": {"epochs": 4, "batch_size": 32}}
# the experiment tests are about DVC recording params and metrics, not the search: no autotune
EXPERIMENT = {"train": {"epochs": 4, "batch_size": 32, "autotune": {"budget_s": 0}}}


def test_full_repro_then_nothing_reruns(tmp_path):
    repo = make_repo(tmp_path / "repo", params=FAST)
    out = run(["dvc", "repro"], repo).stdout
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    for section in ("test", "baseline"):
        assert 0.5 < metrics[section]["macro_f1"] <= 1.0
        assert 0.5 < metrics[section]["accuracy"] <= 1.0
    c = metrics["comparison"]
    assert c["delta_macro_f1"] == pytest.approx(metrics["test"]["macro_f1"] - metrics["baseline"]["macro_f1"])
    assert c["ci95_low"] <= c["ci95_high"] and c["bootstrap"] == 1000 and 0 <= c["mcnemar_p"] <= 1
    assert (repo / "models/classifier/manifest.json").exists()
    _plots_are_dvclive_sklearn_plots(repo, metrics)
    _plots_render_offline(repo)
    again = run(["dvc", "repro"], repo).stdout
    assert "Running stage" not in again
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in again
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    assert "reports/metrics.json" in json.dumps(shown)


def _plots_are_dvclive_sklearn_plots(repo, metrics):
    plots = repo / "reports/evaluate/plots/sklearn"
    labels = sorted(metrics["test"]["per_class"])
    cm = json.loads((plots / "confusion.json").read_text(encoding="utf-8"))
    assert len(cm) == metrics["test"]["n"] and {r["actual"] for r in cm} <= set(labels)
    roc = json.loads((plots / "roc.json").read_text(encoding="utf-8"))["roc"]
    assert (roc[0]["fpr"], roc[0]["tpr"], roc[-1]["fpr"], roc[-1]["tpr"]) == (0, 0, 1, 1)
    assert json.loads((plots / "precision_recall.json").read_text(encoding="utf-8"))["precision_recall"]
    cal = json.loads((plots / "calibration.json").read_text(encoding="utf-8"))["calibration"]
    assert cal and all(0 <= p["prob_true"] <= 1 and 0 < p["prob_pred"] <= 1 for p in cal)
    # the four declared outputs and nothing else (no DVCLive summary of no metrics)
    written = sorted(p.name for p in (repo / "reports/evaluate").rglob("*") if p.is_file())
    assert written == ["calibration.json", "confusion.json", "precision_recall.json", "roc.json"]
    # the train stage's curves are declared one by one (each with its title): none left out
    curves = {p.relative_to(repo).as_posix() for p in (repo / "reports/train/plots").rglob("*") if p.is_file()}
    stage_plots = yaml.safe_load((repo / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["train"]["plots"]
    assert curves and curves <= {next(iter(entry)) for entry in stage_plots}, curves


def headless_browser() -> str:
    found = [shutil.which(name) for name in ("chromium-headless-shell", "chromium", "google-chrome")]
    browser = os.environ.get("TEXTCLF_BROWSER") or next((b for b in found if b), None)
    if not browser:
        pytest.fail("no headless Chromium: `make browser` installs Debian's chromium-headless-shell")
    return browser


# Appended to the page DVC wrote: after the scripts have run, how many pixels of each plot's
# canvas are not background (a plot that did not draw has no canvas: -1)
PROBE = """<script>
setTimeout(function () {
  var out = [];
  document.querySelectorAll("body > div[id]").forEach(function (div) {
    var c = div.querySelector("canvas"), ink = -1;
    if (c && c.width && c.height) {
      var px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      ink = 0;
      for (var i = 0; i < px.length; i += 4)
        if (px[i + 3] > 0 && (px[i] < 200 || px[i + 1] < 200 || px[i + 2] < 200)) ink++;
    }
    out.push(div.id + " " + ink);
  });
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = out.join("\\n");
  document.body.appendChild(pre);
}, 2000);
</script>"""


def render_offline(page: Path) -> dict[str, int]:
    """Each plot's drawn pixels when a real headless Chromium opens `page` with the network off
    (no name resolves, every request goes to a closed proxy port)."""
    head, _, tail = page.read_text(encoding="utf-8").rpartition("</body>")
    probed = page.with_name("probe.html")
    probed.write_text(head + PROBE + "</body>" + tail, encoding="utf-8")
    cmd = [
        headless_browser(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9",
        "--disable-background-networking",
        f"--user-data-dir={page.parent / 'browser-profile'}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        probed.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    return {line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1]) for line in found.group(1).splitlines()}


def _plots_render_offline(repo):
    """`dvc plots show` with the project's template (.dvc/config) draws every plot offline; DVC's
    own page, which loads Vega from a CDN, draws none (the check can fail)."""
    declared = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)["data"]
    titles = {path: shown[0]["content"]["title"]["text"] for path, shown in declared.items()}
    # titled in words, not by their file's path (DVC's default title)
    assert titles["reports/train/plots/metrics/train/loss.tsv"] == "Training loss by epoch"
    assert not [t for t in titles.values() if "/" in t or t.endswith((".tsv", ".json"))], titles
    run(["dvc", "plots", "show", "-o", "offline"], repo)
    page = repo / "offline" / "index.html"
    assert "<script src=" not in page.read_text(encoding="utf-8")
    drawn = render_offline(page)
    assert len(drawn) == len(declared) == 9, (sorted(drawn), sorted(declared))
    assert any("calibration" in name for name in drawn)
    assert all(ink > 500 for ink in drawn.values()), drawn

    from dvc_render.html import PAGE_HTML

    (repo / "dvc-page.html").write_text(PAGE_HTML, encoding="utf-8")
    run(["dvc", "plots", "show", "-o", "cdn", "--html-template", "dvc-page.html"], repo)
    assert "cdn.jsdelivr.net" in (repo / "cdn" / "index.html").read_text(encoding="utf-8")
    assert set(render_offline(repo / "cdn" / "index.html").values()) == {-1}


def _train_outputs(repo):
    weights = load_file(str(repo / "models/classifier/model.safetensors"))
    return json.loads((repo / "reports/train/metrics.json").read_text()), weights


def test_training_killed_mid_epoch_resumes_to_the_same_result(tmp_path):
    params = {
        "train": {
            "model": "bag",
            "epochs": 5,
            "batch_size": 4,
            "patience": 10,
            "bag": {"dropout": 0.3},
            "autotune": {"budget_s": 0},
        }
    }
    ref = make_repo(tmp_path / "ref", params=params)
    run(["dvc", "repro", "train"], ref)
    ref_metrics, ref_weights = _train_outputs(ref)

    repo = make_repo(tmp_path / "repo", params=params)
    run(["dvc", "repro", "vocab"], repo)
    state = repo / "models/checkpoint/state.json"
    proc = subprocess.Popen(
        ["dvc", "repro", "train"],
        cwd=repo,
        env=env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_while_running(proc, lambda: json.loads(state.read_text())["state"]["epoch"] >= 2, "training")
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the training process, mid-epoch
    proc.wait(timeout=30)
    killed_at = json.loads(state.read_text())["state"]["epoch"]
    assert 2 <= killed_at < 5

    out = run(["dvc", "repro", "train"], repo).stdout + run(["dvc", "status"], repo).stdout
    assert "Running stage 'train'" in out
    metrics, weights = _train_outputs(repo)
    assert metrics == ref_metrics
    assert weights.keys() == ref_weights.keys()
    for k in weights:
        assert (weights[k] == ref_weights[k]).all(), k


def test_autotune_killed_mid_search_resumes_to_the_same_choice(tmp_path):
    """SIGKILL `dvc repro train` after some trials: the rerun resumes after the finished trials
    and ends with the choice, weights and metrics of an uninterrupted search."""
    params = {
        "train": {
            "model": "bag",
            "epochs": 4,
            "batch_size": 4,
            "patience": 10,
            "autotune": {"budget_s": 600, "trials": 4, "families": ["bag"], "seed": 3},
        }
    }
    ref = make_repo(tmp_path / "ref", params=params)
    run(["dvc", "repro", "train"], ref)
    ref_metrics, ref_weights = _train_outputs(ref)
    ref_choice = json.loads((ref / "reports/train/autotune.json").read_text())

    repo = make_repo(tmp_path / "repo", params=params)
    run(["dvc", "repro", "vocab"], repo)
    log = repo / "models/checkpoint/autotune.json"
    proc = subprocess.Popen(
        ["dvc", "repro", "train"],
        cwd=repo,
        env=env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_while_running(proc, lambda: len(json.loads(log.read_text())["trials"]) >= 2, "the search")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert 2 <= len(json.loads(log.read_text())["trials"]) < 4

    out = run(["dvc", "repro", "train"], repo).stdout
    assert "Running stage 'train'" in out
    assert json.loads((repo / "reports/train/autotune.json").read_text()) == ref_choice
    metrics, weights = _train_outputs(repo)
    assert metrics == ref_metrics
    for k in weights:
        assert (weights[k] == ref_weights[k]).all(), k
    assert not log.exists()  # a finished search leaves no log: `dvc repro -f` searches again


def test_dvc_experiments_with_a_param_override_run_now_and_queued(tmp_path):
    """`dvc exp run -S`, then `dvc exp run --queue` + `dvc queue start`: a background worker runs
    the queued experiment; `dvc exp show` lists both with their params and metrics, and the
    branch keeps its committed params."""
    repo = make_repo(tmp_path / "repo", params=EXPERIMENT)
    run(["dvc", "exp", "run", "-S", "train.lr=0.02", "-n", "lr002"], repo)
    head = run(["git", "show", "HEAD:params.yaml"], repo).stdout
    assert "lr: 0.02" not in head  # the experiment is recorded apart from the branch
    run(["dvc", "exp", "run", "--queue", "-S", "train.lr=0.03", "-n", "queued-lr003"], repo)
    try:
        run(["dvc", "queue", "start", "-j", "1"], repo)
        deadline = time.monotonic() + 300
        while True:
            status = run(["dvc", "queue", "status"], repo).stdout
            if "queued-lr003" in status and not any(s in status for s in ("Queued", "Running")):
                break
            assert time.monotonic() < deadline, status
            time.sleep(2)
        assert "Success" in status, status
    finally:
        subprocess.run(["dvc", "queue", "stop"], cwd=repo, env=env(), capture_output=True, timeout=60)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    exps = {e["name"]: e["revs"][0]["data"] for rev in shown for e in (rev.get("experiments") or [])}
    assert {"lr002", "queued-lr003"} <= set(exps), json.dumps(shown)[:500]
    for name, lr in (("lr002", 0.02), ("queued-lr003", 0.03)):
        data = exps[name]
        assert data["params"]["params.yaml"]["data"]["train"]["lr"] == lr
        assert 0.0 <= data["metrics"]["reports/metrics.json"]["data"]["test"]["macro_f1"] <= 1.0
