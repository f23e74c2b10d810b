"""dvc.yaml and params.yaml agree with the code: a stage lists exactly the params keys it reads,
its own module as a dependency, and params.yaml has a valid section per stage."""

from __future__ import annotations

import yaml

from stages.params import SECTIONS, load_params
from tests.fixtures import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
# sections a stage reads besides its own (train records the clean settings in the bundle; how the
# clean stage batches its work does not change the text settings, so it is not a train dependency)
ALSO_READS = {"train": ["clean"]}
EXECUTION_ONLY = {"chunk_rows", "engine"}


def test_every_params_section_is_valid():
    for section in SECTIONS:
        load_params(section, ROOT / "params.yaml")


def test_each_stage_runs_its_own_module_and_depends_on_it():
    for name, stage in DVC.items():
        assert stage["cmd"] == f"python -m stages.{name}"
        assert f"stages/{name}.py" in stage["deps"]
        for dep in stage["deps"]:
            if dep.startswith("stages/"):
                assert (ROOT / dep).exists(), dep


def test_stages_list_exactly_the_keys_they_read():
    for name, stage in DVC.items():
        if name not in SECTIONS:
            continue
        listed = {p for p in stage.get("params", []) if isinstance(p, str)}
        expected = {f"{name}.{k}" for k in SECTIONS[name].model_fields}
        expected |= {f"{s}.{k}" for s in ALSO_READS.get(name, []) for k in SECTIONS[s].model_fields
                     if k not in EXECUTION_ONLY}
        assert listed == expected, name


def _stage_imports(module: str) -> set[str]:
    """stages.* modules a module imports, at any depth (a change to any of them can change the
    stage's output, so each must be a DVC dependency)."""
    import ast

    seen: set[str] = set()
    todo = [module]
    while todo:
        path = ROOT / f"{todo.pop().replace('.', '/')}.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stages."):
                if node.module not in seen:
                    seen.add(node.module)
                    todo.append(node.module)
    return seen


def test_modules_a_stage_imports_at_any_depth_are_dependencies():
    for name, stage in DVC.items():
        for mod in sorted(_stage_imports(f"stages.{name}")):
            assert f"{mod.replace('.', '/')}.py" in stage["deps"], f"{name} imports {mod}"
