"""The ``lmccheck`` command.

Subcommands::

    lmccheck align A B --arch ARCH [--width W] [--depth D] [--norm N] --dataset DS
                   [--method weight|activation] [--out perm.safetensors] [--plot curve.png] [--json]
    lmccheck barrier A B --arch ARCH ... --dataset DS      # the same, without alignment
    lmccheck claims [pytest args]                          # python -m pytest claims [args]
    lmccheck report report/claims.json [--out DIR]         # re-render Markdown and figures
    lmccheck cache [--cache DIR] ls [--json] | info KEY | clear [--kind KIND] [--yes]

``align`` loads two checkpoints (safetensors files, or ``.pt`` state dicts read
with ``torch.load(..., weights_only=True)``: a pickle that needs unsafe loading is
refused), finds the permutation ``P`` aligning B onto A, and measures the loss
and error barriers (Sharma et al. Eq. 1) of the paths A -> B and A -> P[B] on
the first ``--n-examples`` train and test examples at ``--alphas`` evenly spaced
alphas.

Every user error (missing file, unsafe pickle, checkpoint that does not fit the
architecture, NaN weights, unknown model or dataset, missing dataset, store
problems) prints ``lmccheck: error: <message>`` on stderr and exits with code 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import __version__, store_admin
from .catalog import ID_PATTERN
from .cli_common import EXIT_USER_ERROR, PROG, CliError
from .store import Store, StoreError

__all__ = ["CliError", "build_parser", "main"]



# --------------------------------------------------------------------------- #
# claims / report / cache
# --------------------------------------------------------------------------- #
def _names_claims_path(arg: str, claims: Path) -> bool:
    """True if a pytest argument is a path (or node id) inside ``claims``."""
    if arg.startswith("-"):
        return False
    target = Path(arg.split("::", 1)[0])
    try:
        resolved = target.resolve()
    except OSError:
        return False
    return resolved == claims or claims in resolved.parents


def cmd_claims(pytest_args: Sequence[str]) -> int:
    """``lmccheck claims [pytest args]``: ``python -m pytest claims [args]`` in this directory."""
    args = list(pytest_args)
    if args[:1] == ["--"]:
        args = args[1:]
    claims = (Path.cwd() / "claims").resolve()
    if not claims.is_dir():
        raise CliError(
            f"no claims/ folder in {Path.cwd()}; run `lmccheck claims` from the root of the lmccheck "
            "source tree (the folder holding claims/, fixtures/ and pyproject.toml)"
        )
    import importlib.util

    if importlib.util.find_spec("pytest") is None:
        raise CliError("pytest is not installed; install lmccheck with its test extras: pip install 'lmccheck[test]'")
    ids = []  # leading claim ids: `lmccheck claims S2 S5 -x` runs the S2 and S5 checks
    while args and all(ID_PATTERN.fullmatch(part) for part in args[0].split(",")):
        ids.append(args.pop(0))
    if ids:
        args = ["--lmc-claim", ",".join(ids), *args]
    targets = [] if any(_names_claims_path(a, claims) for a in args) else ["claims"]
    cmd = [sys.executable, "-m", "pytest", *targets, *args]
    return subprocess.call(cmd)


def _load_report(path: str) -> list[dict[str, Any]]:
    from .report import load_report

    try:
        return load_report(path)[0]
    except ValueError as exc:
        raise CliError(str(exc)) from None


def cmd_report(args: argparse.Namespace) -> int:
    """``lmccheck report claims.json [--out DIR | --compare OLD.json | --outcomes B.json ... | --verdict-table]``."""
    from . import assertions
    from .report import FIGURES_DIR, render, sort_records

    src = Path(args.json_path)
    if not src.is_file():
        raise CliError(f"no such report file: {src} (a claims.json written by `lmccheck claims`)")
    if args.compare or args.outcomes or args.verdict_table:
        records = sort_records(_load_report(str(src)))
        if args.verdict_table:
            print(assertions.markdown_table(["id", "setting", "verdict", "deciding assertions (estimate, interval)"],
                                            assertions.verdict_rows(records)))
        if args.outcomes:
            runs: dict[str, Sequence[Mapping[str, Any]]] = {str(src): records,
                                                            **{p: _load_report(p) for p in args.outcomes}}
            print(assertions.markdown_table(["check", "assertion", *runs], assertions.outcome_table(runs)))
        if args.compare:
            changes = assertions.compare(_load_report(args.compare), records)
            for c in changes:
                print(c.line())
            loud = sum(c.loud for c in changes)
            print(f"{len(changes)} change(s), {loud} PASS <-> FAIL flip(s)")
            return 1 if loud else 0
        return 0
    md = render(src, args.out)
    figures = sorted((md.parent / FIGURES_DIR).glob("*.png")) if (md.parent / FIGURES_DIR).is_dir() else []
    print(f"wrote {md} and {len(figures)} figure(s) in {md.parent / FIGURES_DIR}")
    return 0


def _store(args: argparse.Namespace) -> Store:
    return Store(args.cache)


def _short_time(created: Any) -> str:
    """``2024-05-01T12:34:56.789+00:00`` -> ``2024-05-01 12:34``."""
    text = str(created or "")
    return text[:16].replace("T", " ") if len(text) >= 16 else text


def format_entries(rows: Sequence[Mapping[str, Any]]) -> str:
    """The ``cache ls`` table."""
    header = ["key", "kind", "created", "size", "status", "description"]
    lines = [header] + [
        [
            str(r.get("short", "")),
            str(r.get("kind") or "?"),
            _short_time(r.get("created")),
            str(r.get("size", "")),
            str(r.get("status", "")),
            str(r.get("description", "")),
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def cmd_data_synthetic(args: argparse.Namespace) -> int:
    from .data import synthetic_arrays, write_arrays

    path = write_arrays(args.name, args.root, *synthetic_arrays(args.name, args.train, args.test, args.seed))
    print(f"wrote a synthetic stand-in for {args.name} ({args.train} training, {args.test} test examples, seed "
          f"{args.seed}) to {path}; it is read in place of {args.name} under this data root (not for measurements)")
    return 0


def cmd_cache_ls(args: argparse.Namespace) -> int:
    store = _store(args)
    rows = store_admin.ls(store)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print(f"the cache {store.root} is empty")
        return 0
    print(format_entries(rows))
    total = sum(int(r.get("size_bytes") or 0) for r in rows)
    print(f"\n{_entries(len(rows))}, {store_admin.describe_size(total)} in {store.root}")
    return 0


def cmd_cache_info(args: argparse.Namespace) -> int:
    info = store_admin.info(_store(args), args.key)
    print(json.dumps(info, indent=2, default=str))
    return 0


def _confirm(question: str) -> bool:
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_cache_clear(args: argparse.Namespace) -> int:
    store = _store(args)
    rows = [r for r in store_admin.ls(store) if args.kind is None or r.get("kind") == args.kind]
    what = f"{_entries(len(rows))} of kind {args.kind!r}" if args.kind else f"all {_entries(len(rows))}"
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError(f"refusing to remove {what} from {store.root} without confirmation; pass --yes")
        if not _confirm(f"remove {what} from {store.root}?"):
            print("nothing removed")
            return 1
    n = store_admin.clear(store, args.kind)
    print(f"removed {_entries(n)} from {store.root}")
    return 0


# --------------------------------------------------------------------------- #
# Parser and entry point
# --------------------------------------------------------------------------- #


def _top_parser() -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Linear mode connectivity modulo permutation: align networks, measure barriers."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser, parser.add_subparsers(dest="command", metavar="COMMAND", required=True)


def _add_cache_command(sub: Any) -> None:
    """``lmccheck cache``: the store's admin commands (they need no torch)."""
    p = sub.add_parser("cache", help="list, inspect or clear the fixture store")
    p.add_argument(
        "--cache", metavar="DIR", default=None, help="store root (default $LMCCHECK_CACHE or ~/.cache/lmccheck)"
    )
    cache_sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    leaf = argparse.ArgumentParser(add_help=False)
    leaf.add_argument("--cache", metavar="DIR", default=argparse.SUPPRESS, help="store root")
    q = cache_sub.add_parser("ls", parents=[leaf], help="list entries")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_cache_ls)
    q = cache_sub.add_parser("info", parents=[leaf], help="describe one entry")
    q.add_argument("key", metavar="KEY", help="key or unique prefix (>= 6 hex digits)")
    q.set_defaults(func=cmd_cache_info)
    q = cache_sub.add_parser("clear", parents=[leaf], help="remove entries")
    q.add_argument("--kind", default=None, help="only entries of this kind (train, spawn, imp, ...)")
    q.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    q.set_defaults(func=cmd_cache_clear)


def build_parser() -> argparse.ArgumentParser:
    """The ``lmccheck`` argument parser (every command: it loads torch, for the models' and datasets' names)."""
    from .data import DATASETS
    from .pair_commands import add_pair_commands

    parser, sub = _top_parser()
    add_pair_commands(sub)

    sub.add_parser(
        "claims",
        usage=f"{PROG} claims [CLAIM ID ...] [PYTEST ARGS ...]",
        help="run the claim checks (python -m pytest claims [ARGS]); leading ids select claims: claims S2 S5",
        description="Run `python -m pytest claims [ARGS]` from the source tree. Leading claim ids (S2 S5, or "
        "S2,S5) select those claims (--lmc-claim); every other argument goes to pytest "
        "(use `lmccheck claims -- --help` for pytest's help).",
    )

    p = sub.add_parser("report", help="re-render claims.md and figures from claims.json")
    p.add_argument("json_path", metavar="CLAIMS_JSON", help="a claims.json written by a claim run")
    p.add_argument("--out", metavar="DIR", default=None, help="output folder (default: the JSON's folder)")
    p.add_argument("--compare", metavar="OLD_JSON", default=None,
                   help="print what changed since an earlier report (outcomes, estimates beyond their interval); "
                   "exit 1 on a PASS <-> FAIL flip")
    p.add_argument("--outcomes", metavar="JSON", nargs="+", default=None,
                   help="print a Markdown table of every check's and assertion's outcome in this and other reports")
    p.add_argument("--verdict-table", action="store_true",
                   help="print the claims index (verdict and deciding assertions per check) as Markdown")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("data", help="prepare datasets under a data root")
    data_sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = data_sub.add_parser(
        "synthetic", help="write a small learnable stand-in for a dataset (<root>/<name>.safetensors)",
        description="Write a small synthetic dataset in NAME's shape and classes as ROOT/NAME.safetensors, which "
        "lmccheck reads in place of NAME under that data root: for exercising code paths offline (the GPU tier's "
        "dry run, --lmc-budget dryrun --lmc-data-root ROOT), never for measurements.")
    q.add_argument("name", metavar="NAME", choices=[n for n in DATASETS if n != "fashion-mnist"],
                   help="dataset to stand in for (" + ", ".join(n for n in DATASETS if n != "fashion-mnist") + ")")
    q.add_argument("--root", metavar="DIR", required=True, help="data root to write into")
    q.add_argument("--train", type=int, default=512, help="training examples (default 512)")
    q.add_argument("--test", type=int, default=256, help="test examples (default 256)")
    q.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    q.set_defaults(func=cmd_data_synthetic)

    _add_cache_command(sub)
    return parser


def _message(e: BaseException) -> str:
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    text = str(e) or type(e).__name__
    data = sys.modules.get("lmccheck.data")  # loaded by any command that reads a dataset
    if data is not None and isinstance(e, data.DatasetNotFoundError):  # the library names pytest's options
        text = text.replace("--lmc-download", "--download").replace("--lmc-data-root", "--data-root")
    return text


def _dispatch(argv: list[str]) -> int:
    if argv[:1] == ["claims"] and argv[1:2] not in (["-h"], ["--help"]):
        return cmd_claims(argv[1:])
    if argv[:1] == ["cache"]:  # the store's admin commands start without torch
        parser, sub = _top_parser()
        _add_cache_command(sub)
    else:
        parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors (argparse prints them)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USER_ERROR)
    return int(args.func(args))


def _out_of_gpu_memory(e: BaseException) -> bool:
    """Whether ``e`` is torch's CUDA out-of-memory error (only a command that loaded torch can raise it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(e, torch.cuda.OutOfMemoryError)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. captured output)
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lmccheck`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        _silence_stdout()
        return 141
    except (CliError, ValueError, KeyError, StoreError, OSError) as e:  # a missing dataset is an OSError
        print(f"{PROG}: error: {_message(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except RuntimeError as e:
        if not _out_of_gpu_memory(e):
            raise
        print(f"{PROG}: error: out of GPU memory; try a smaller --n-examples or --device cpu", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m lmccheck.cli: run the imported module's main (one CliError class)
    from lmccheck.cli import main as _main

    sys.exit(_main())
