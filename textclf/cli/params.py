"""`textclf params`: validate params.yaml and print its typed sections."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("params", help="validate params.yaml and print the typed sections")
    p.add_argument("section", nargs="?", help="one section (default: all)")
    p.add_argument("--file", default="params.yaml", help="the params file (default: params.yaml)")
    return p


def run(args: argparse.Namespace) -> int:
    from textclf.params import SECTIONS, load_params

    for name in SECTIONS if not args.section else [args.section]:
        print(f"{name}: {load_params(name, args.file).model_dump()}")
    return 0
