"""``agelatent-models``: fetch, list and verify the pretrained weight files (see :mod:`agelatent.store`)."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from agelatent import store


def _list(console: Console) -> int:
    table = Table(title=f"model cache: {store.cache_dir()}")
    for column in ("name", "source wheel", "file", "licence", "status"):
        table.add_column(column)
    for spec in store.MODELS.values():
        path = store.cached_path(spec.name)
        status = "[green]cached[/]" if path.is_file() else "[yellow]not fetched[/]"
        table.add_row(spec.name, f"{spec.wheel}=={spec.version}", spec.filename, spec.licence, status)
    console.print(table)
    return 0


def _verify(console: Console, names: list[str]) -> int:
    failed = 0
    for name in names or sorted(store.MODELS):
        try:
            path = store.verify(name)
            console.print(f"[green]ok[/]      {name}  {path}")
        except store.ModelFileError as err:
            failed += 1
            console.print(f"[red]failed[/]  {err}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agelatent-models", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="download, extract and sha256-check the weight files")
    p_fetch.add_argument("names", nargs="*", help="model names (default: all)")
    p_fetch.add_argument("--force", action="store_true", help="replace cached copies")
    sub.add_parser("list", help="show the known weight files and whether they are cached")
    p_verify = sub.add_parser("verify", help="check cached files against their pinned sha256")
    p_verify.add_argument("names", nargs="*", help="model names (default: all)")
    args = parser.parse_args(argv)

    console = Console()
    try:
        if args.command == "list":
            return _list(console)
        if args.command == "verify":
            return _verify(console, args.names)
        for path in store.fetch(args.names or None, force=args.force):
            console.print(f"[green]ok[/]  {path}")
        return 0
    except store.ModelFileError as err:
        console.print(f"[red]error:[/] {err}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
