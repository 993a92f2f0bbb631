"""``mergelang cache info|verify|clean``: the cache folder, its size, its health, its cleanup.

``info`` prints the folder, its size, how many objects and partial files it holds and the
oldest and newest last use; ``verify`` recomputes every object's data digest and lists the
bad ones (``--delete`` removes them; exit status 1 when a bad one is kept); ``clean`` removes
objects last used more than ``--older-than DAYS`` ago, the least recently used ones until
the rest fit in ``--max-size SIZE``, or ``--all``, and every partial file no live run holds.
``--cache-dir`` chooses the folder as for ``run``. No torch is imported.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from mergelang.errors import UsageError

__all__ = ["parse_size", "register"]

_UNITS = {"": 1, "B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_UNITS |= {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def parse_size(text: str) -> int:
    """``500M``, ``20GB``, ``1.5GiB``, ``1000`` -> bytes (decimal units unless ``iB``)."""
    found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = found.group(2).upper() if found else None
    if found is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (for example 500M or 20GB)")
    return int(float(found.group(1)) * _UNITS[unit])


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("the number of days cannot be negative")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="show, verify or clean the cache folder",
        description="Show what the cache folder holds, verify its objects, or clean it.",
    )
    verbs = parser.add_subparsers(dest="cache_verb", metavar="ACTION")
    verbs.required = True
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="the cache folder (default: $MERGELANG_CACHE, else $XDG_CACHE_HOME/mergelang, "
        "else ~/.cache/mergelang)",
    )
    info = verbs.add_parser("info", parents=[shared], help="the folder, its size and contents")
    info.set_defaults(handler=run_info)
    verify = verbs.add_parser(
        "verify", parents=[shared], help="recompute every object's digest, list the bad ones"
    )
    verify.add_argument("--delete", action="store_true", help="remove the bad objects")
    verify.set_defaults(handler=run_verify)
    clean = verbs.add_parser("clean", parents=[shared], help="remove objects")
    clean.add_argument(
        "--older-than", type=_days, metavar="DAYS", help="objects last used before then"
    )
    clean.add_argument(
        "--max-size",
        type=parse_size,
        metavar="SIZE",
        help="the least recently used objects until the rest fit (500M, 20GB...)",
    )
    clean.add_argument("--all", action="store_true", help="every object")
    clean.set_defaults(handler=run_clean)


def _folder(args: argparse.Namespace) -> Path:
    from mergelang.io.hashing import default_cache_dir

    folder: Path = args.cache_dir if args.cache_dir is not None else default_cache_dir()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"the cache folder {folder} is not a folder")
    return folder


def _size(size: int) -> str:
    from mergelang.cli.show import human_size

    return human_size(size)


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def run_info(args: argparse.Namespace) -> int:
    from mergelang.cli.console import shown
    from mergelang.plan.cache_folder import survey

    folder = _folder(args)
    found = survey(folder)
    out = sys.stdout
    out.write(f"folder: {shown(str(folder))}\n")
    out.write(f"size: {_size(found.total_bytes)}\n")
    out.write(f"objects: {len(found.objects)} ({_size(found.object_bytes)})\n")
    live = f", {found.live_partials} held by a running run" if found.live_partials else ""
    out.write(f"partial files: {found.partials} ({_size(found.partial_bytes)}{live})\n")
    if found.objects:
        uses = [o.last_use for o in found.objects]
        out.write(f"oldest last use: {_when(min(uses))}\n")
        out.write(f"newest last use: {_when(max(uses))}\n")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from mergelang.cli.console import shown
    from mergelang.plan.cache_folder import verify

    verdicts = verify(_folder(args), delete=args.delete)
    bad = [v for v in verdicts if v.problem is not None]
    for verdict in bad:
        action = " (removed)" if args.delete else ""
        sys.stdout.write(f"{shown(str(verdict.path))}: bad: {verdict.problem}{action}\n")
    sys.stdout.write(f"{len(verdicts)} objects checked, {len(bad)} bad\n")
    return 1 if bad and not args.delete else 0


def run_clean(args: argparse.Namespace) -> int:
    from mergelang.plan.cache_folder import clean

    if args.older_than is None and args.max_size is None and not args.all:
        raise UsageError("mergelang cache clean needs --older-than DAYS, --max-size SIZE or --all")
    removed, swept = clean(
        _folder(args),
        older_than=None if args.older_than is None else args.older_than * 86400,
        max_size=args.max_size,
        everything=args.all,
        now=time.time(),
    )
    freed = sum(o.size for o in removed)
    sys.stdout.write(
        f"removed {len(removed)} objects ({_size(freed)}) and {len(swept)} partial files\n"
    )
    return 0
