"""`textclf promote`: register the committed model and assign a stage (GTO tags)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from textclf.cli.options import repo_option


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "promote",
        parents=[repo_option()],
        help="register the committed model in the registry and assign a stage (GTO tags)",
        description="Register the models committed at --rev (the dvc.yaml artifacts classifier and "
        "classifier-onnx) as a new version, e.g. classifier@v0.2.0, and assign --stage, e.g. "
        "classifier#prod#3, as GTO git tags in this repository (push them with git push --tags). "
        "`gto show` lists the registry; `dvc artifacts get . classifier --stage prod` fetches one.",
    )
    p.add_argument("--stage", default="prod", help="the stage to assign (default: prod)")
    p.add_argument("--rev", default="HEAD", help="the commit whose models are promoted (default: HEAD)")
    v = p.add_mutually_exclusive_group()
    v.add_argument("--version", default=None, help="the version to register, vMAJOR.MINOR.PATCH (default: next)")
    v.add_argument(
        "--bump", choices=("major", "minor", "patch"), default=None, help="which part of the version to bump"
    )
    p.add_argument("-m", "--message", default=None, help="tag message")
    p.add_argument("--json", action="store_true", help="print the tags as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    from textclf import registry

    repo = Path(args.repo)
    done = registry.promote(
        repo, stage=args.stage, version=args.version, bump=args.bump, rev=args.rev, message=args.message
    )
    if args.json:
        print(json.dumps([dataclasses.asdict(d) for d in done], indent=2))
    else:
        for d in done:
            how = "registered" if d.new_version else "already registered"
            print(f"{d.artifact}: {d.version} {how} ({d.version_tag}), stage {d.stage} assigned ({d.stage_tag})")
        print("push the tags with: git push --tags", file=sys.stderr)
    for name in registry.unreadable(repo, args.rev):
        print(
            f"textclf promote: warning: {name}'s files at {args.rev} are not in this repository's DVC cache "
            f"(this clone built another model, or it was never pulled): `--model {name}#{args.stage}` "
            "can read them only from a remote that has them (`dvc push` from where they were built)",
            file=sys.stderr,
        )
    return 0
