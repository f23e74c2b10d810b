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


def test_shared_modules_a_stage_imports_are_dependencies():
    import ast

    for name, stage in DVC.items():
        tree = ast.parse((ROOT / f"stages/{name}.py").read_text(encoding="utf-8"))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                    and n.module.startswith("stages.")}
        for mod in imported:
            assert f"{mod.replace('.', '/')}.py" in stage["deps"], f"{name} imports {mod}"


def test_code_defaults_are_the_shipped_params():
    """params.yaml and the typed defaults tell the same story (benches and tests use the classes)."""
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for section, cls in SECTIONS.items():
        assert cls().model_dump(mode="json") == load_params(section, ROOT / "params.yaml").model_dump(mode="json"), \
            section
        assert set(shipped[section]) == set(cls.model_fields), section
