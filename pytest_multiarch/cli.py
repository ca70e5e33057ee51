"""``pytest-multiarch merge SHARD.json…``: one matrix and one gate verdict from the reports of
separate jobs (one per arch, each where the arch is native).  Also ``python -m pytest_multiarch``.

Exit status: 0 the gate passes, 1 it fails (the reasons are printed), 2 bad input (one line
saying what was wrong and what to do, never a traceback).  No pytest import: a merge job needs
only this package.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pytest_multiarch.errors import MultiarchError
from pytest_multiarch.platforms import Platform, parse_arch_list

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT = 0, 1, 2
PROG = "pytest-multiarch"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line instead of argparse's usage block: the message says what to fix."""
        self.exit(EXIT_BAD_INPUT, f"{PROG}: {message} (see {PROG} merge --help)\n")


def _parser() -> _Parser:
    parser = _Parser(prog=PROG, description="Tools for pytest-multiarch reports")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    merge = commands.add_parser(
        "merge", help="Merge per-arch shards into one matrix and one gate verdict",
        description="Merge the --multiarch-report files of separate jobs into one arch matrix; "
                    "exit 1 when the gate fails, 2 on bad input",
    )
    merge.add_argument("shards", nargs="*", metavar="SHARD.json",
                       help="Reports written by pytest --multiarch-report, one per job")
    merge.add_argument("--multiarch-report", metavar="OUT.json", type=Path,
                       help="Write the merged report (same schema as a shard) to OUT.json")
    merge.add_argument("--junitxml", metavar="OUT.xml", type=Path,
                       help="Write one JUnit test case per test and arch to OUT.xml")
    merge.add_argument("--require-arch", metavar="LIST", default="",
                       help="Comma-separated archs that must each have a shard, e.g. "
                            "amd64,arm64,s390x")
    merge.add_argument("--markdown", metavar="OUT.md", type=Path,
                       help="Write the matrix as a Markdown table to OUT.md (GITHUB_STEP_SUMMARY "
                            "gets it appended whenever that variable is set)")
    merge.add_argument("--reference-arch", metavar="ARCH", default=None,
                       help="Arch whose recorded REST answers the others must match (default: "
                            "the first of --require-arch, else the first arch seen)")
    merge.add_argument("--multiarch-baseline", metavar="PATH", type=Path,
                       help="Compare the merged run with the baseline in PATH, then update it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command != "merge":
        print(f"{PROG}: name a command: merge (see {PROG} --help)", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return _merge(args)
    except MultiarchError as exc:
        print(f"{PROG} merge: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _required(text: str) -> list[Platform]:
    if not text.strip():
        return []
    if "native" in (n.strip().lower() for n in text.split(",")):
        raise MultiarchError("--require-arch: name the archs; 'native' would mean the merge "
                             "machine's own arch, not a job's")
    try:
        return parse_arch_list(text)
    except MultiarchError as exc:
        raise MultiarchError(f"--require-arch={text!r}: {exc}") from None


def _merge(args: argparse.Namespace) -> int:
    from pytest_multiarch.session.merge import merge_shards
    from pytest_multiarch.session.shard import load_shard

    required = _required(args.require_arch)
    reference = None
    if args.reference_arch:
        try:
            reference = Platform.parse(args.reference_arch).arch_name
        except MultiarchError as exc:
            raise MultiarchError(f"--reference-arch={args.reference_arch!r}: {exc}") from None
    if not args.shards:
        raise MultiarchError("no shard files given; pass the --multiarch-report JSON of every "
                             "job, e.g. pytest-multiarch merge shards/*.json")
    paths = [Path(p) for p in args.shards]
    seen: set[Path] = set()
    for path in paths:
        if path.resolve() in seen:
            raise MultiarchError(f"shard {path} is given twice")
        seen.add(path.resolve())
    result = merge_shards([load_shard(p) for p in paths], required, reference)
    for line in result.matrix.render(width=shutil.get_terminal_size((120, 24)).columns):
        print(line)
    _write_outputs(args, result)
    archs = ", ".join(result.matrix.archs) or "none"
    print(f"multiarch merge: {len(paths)} shard(s), archs {archs}")
    for problem in result.problems:
        print(f"FAILED: {problem}")
    if result.ok:
        print("multiarch merge: gate passed")
        return EXIT_OK
    print(f"multiarch merge: gate FAILED ({len(result.problems)} problem(s))")
    return EXIT_GATE_FAILED


def _write_outputs(args: argparse.Namespace, result: object) -> None:
    from pytest_multiarch.session.baseline import snapshot_of_report, update_baseline
    from pytest_multiarch.session.merge import MergeResult
    from pytest_multiarch.session.report import write_json
    from pytest_multiarch.session.summary import append_markdown, markdown, write_junit

    assert isinstance(result, MergeResult)
    summary = os.environ.get("GITHUB_STEP_SUMMARY", "")
    targets: list[tuple[str, Path]] = []
    try:
        if args.multiarch_report is not None:
            targets.append(("report", args.multiarch_report))
            write_json(args.multiarch_report, result.document)
        if args.junitxml is not None:
            targets.append(("JUnit file", args.junitxml))
            write_junit(result.matrix, args.junitxml)
        text = markdown(result)
        if args.markdown is not None:
            targets.append(("Markdown file", args.markdown))
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            args.markdown.write_text(text, encoding="utf-8")
        if summary:
            targets.append(("GITHUB_STEP_SUMMARY", Path(summary)))
            append_markdown(Path(summary), text)
    except OSError as exc:
        what, where = targets[-1]
        raise MultiarchError(f"cannot write the {what} {where}: {exc.strerror}") from None
    if args.multiarch_baseline is not None:
        for line in update_baseline(args.multiarch_baseline,
                                         snapshot_of_report(result.document)):
            print(line)
