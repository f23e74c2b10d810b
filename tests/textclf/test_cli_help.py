"""Every command line the project ships documents every option, and `textclf --version` works."""

import argparse
import subprocess
import sys

import pytest

from flows import pipeline, prefect_server, serve
from flows.incoming import flow as incoming
from textclf import cli


def _actions(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield path, action


@pytest.mark.parametrize(
    "build",
    [cli.build_parser, pipeline.build_parser, incoming.build_parser, serve.build_parser, prefect_server.build_parser],
)
def test_every_option_has_help(build):
    parser = build()
    missing = [
        f"{path}: {'/'.join(a.option_strings) or a.dest}"
        for path, a in _actions(parser, parser.prog)
        if not (a.help or "").strip()
    ]
    assert not missing, missing


def test_textclf_version():
    from importlib.metadata import version

    out = subprocess.run([sys.executable, "-m", "textclf.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"textclf {version('textclf')}"


def test_one_error_path_for_every_command(tmp_path, capsys):
    """Each command raises and `main` answers: one line naming the command, exit 2, no traceback."""
    missing = str(tmp_path / "none")
    for argv in (
        ["params", "--file", missing],
        ["diff", "--repo", missing],
        ["labels", "suspects", "--repo", missing],
        ["promote", "--repo", missing],
        ["predict", "--bundle", missing, "a text"],
        ["serve", "--bundle", missing, "--port", "1"],
    ):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"textclf {argv[0]}: ") and "Traceback" not in err, (argv, err)


def test_every_command_module_pairs_its_parser_and_its_run():
    for command in cli.COMMANDS:
        assert callable(command.add_parser) and callable(command.run), command.__name__
        assert command.__name__.rpartition(".")[2] in cli.build_parser()._subparsers._group_actions[0].choices
