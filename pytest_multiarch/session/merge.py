"""Adding shards up: the reports of separate jobs (one per arch, each on its own machine) become
one matrix and one gate verdict.

The verdict fails when a shard failed or stopped early, a required arch has no shard, two shards
tested different index digests for one image reference (a tag moved between the jobs), two shards
claim the same tests on one arch, or recorded REST answers differ between archs (compared by the
same code as ``multiarch_rest_fleet.assert_same``).  No pytest import: the console script uses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_multiarch.checks.answers import Answer, Comparison, compare_answers
from pytest_multiarch.errors import ShardError
from pytest_multiarch.platforms import Platform
from pytest_multiarch.session.report import ArchInfoLine, Matrix, Outcome
from pytest_multiarch.session.shard import Shard

TESTS_KEY = "(tests)"
FAILING = frozenset({"failed", "error"})
_EXIT_MEANING = {1: "tests failed", 2: "interrupted", 3: "internal error", 4: "usage error",
                 5: "no tests collected"}


@dataclass(frozen=True, slots=True)
class MergeResult:
    """The merged matrix, every reason the gate fails, and the merged report document."""

    matrix: Matrix
    problems: tuple[str, ...]
    comparisons: tuple[Comparison, ...]
    document: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not self.problems


def merge_shards(
    shards: Sequence[Shard],
    required: Sequence[Platform] = (),
    reference_arch: str | None = None,
) -> MergeResult:
    """Merge *shards* (validated by :func:`~pytest_multiarch.session.shard.load_shard`)."""
    problems: list[str] = []
    owners = _owners(shards)
    problems += _duplicate_archs(owners)
    problems += _missing_archs(owners, required)
    indexes, moved = _index_digests(shards)
    problems += moved
    matrix = Matrix([])
    for shard in shards:
        _add_shard(matrix, shard)
        problems += _shard_failures(shard)
    matrix.index_digests.update(indexes)
    problems += _not_run(shards)
    reference = reference_arch or (required[0].arch_name if required else None)
    comparisons = _compare_rest(shards, reference or (matrix.archs[0] if matrix.archs else ""))
    problems += [c.message for c in comparisons if not c.ok]
    document = matrix.to_json({
        "merged_from": [_origin(s) for s in shards],
        "exitstatus": 1 if problems else 0,
        "problems": problems,
        "rest_comparisons": [{"request": c.request, "reference_arch": c.reference_arch,
                              "differing_archs": list(c.differing_archs), "ok": c.ok}
                             for c in comparisons],
    })
    return MergeResult(matrix, tuple(problems), tuple(comparisons), document)


def _owners(shards: Sequence[Shard]) -> dict[str, list[Shard]]:
    owners: dict[str, list[Shard]] = {}
    for shard in shards:
        for arch in shard.archs:
            owners.setdefault(arch, []).append(shard)
    return owners


def _outcomes(shard: Shard, arch: str) -> dict[str, str]:
    """test -> outcome of *arch* in *shard*."""
    found: dict[str, str] = {}
    for per_arch in shard.document["images"].values():
        for check in per_arch.get(arch, {}).get("checks", ()):
            found[check["test"]] = check["outcome"]
    return found


def _duplicate_archs(owners: Mapping[str, list[Shard]]) -> list[str]:
    """One arch in several shards is fine only when they split its tests without overlap."""
    problems = []
    for arch, claimed in owners.items():
        for i, first in enumerate(claimed):
            for second in claimed[i + 1:]:
                a, b = _outcomes(first, arch), _outcomes(second, arch)
                both = sorted(set(a) & set(b)
                              | set(first.document["archs"][arch]["collected"])
                              & set(second.document["archs"][arch]["collected"]))
                if not both:
                    continue
                differ = [t for t in both if t in a and t in b and a[t] != b[t]]
                if differ:
                    t = differ[0]
                    problems.append(
                        f"arch {arch} is claimed by {first.name} and {second.name} with different "
                        f"outcomes: {t} {a[t]} in {first.name}, {b[t]} in {second.name}"
                        + (f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""))
                else:
                    problems.append(
                        f"arch {arch} is claimed by both {first.name} and {second.name} "
                        f"({len(both)} tests in both); give each arch one shard, or split its "
                        "tests between jobs without overlap")
    return problems


def _missing_archs(owners: Mapping[str, list[Shard]], required: Sequence[Platform]) -> list[str]:
    have = ", ".join(f"{a} ({', '.join(s.name for s in owners[a])})" for a in owners) or "none"
    problems = []
    for plat in required:
        arch = plat.arch_name
        if arch not in owners:
            problems.append(f"required arch {arch} has no shard (the shards have: {have}); did "
                            "its job fail before uploading its report?")
            continue
        for shard in owners[arch]:
            how = shard.document["archs"][arch]["how"]
            if str(how).startswith("unavailable"):
                problems.append(f"required arch {arch} did not run in {shard.name}: {how}")
    return problems


def _index_digests(shards: Sequence[Shard]) -> tuple[dict[str, str], list[str]]:
    """(reference -> digest where all shards agree, one problem per reference that moved)."""
    seen: dict[str, dict[str, list[str]]] = {}  # ref -> digest -> ["a.json (amd64)", …]
    for shard in shards:
        for ref, digest in shard.document["index_digests"].items():
            seen.setdefault(ref, {}).setdefault(str(digest), []).append(
                f"{shard.name} ({', '.join(shard.archs)})")
    agreed: dict[str, str] = {}
    problems = []
    for ref, digests in seen.items():
        if len(digests) == 1:
            agreed[ref] = next(iter(digests))
            continue
        tested = " and as ".join(f"{d} by {', '.join(who)}" for d, who in digests.items())
        problems.append(f"image {ref} was tested as {tested}: the reference moved between the "
                        "jobs, so the matrix would describe different images; pin one digest "
                        f"({_repository(ref)}@sha256:…) in every job")
    return agreed, problems


def _repository(ref: str) -> str:
    """*ref* without tag or digest (a registry port is not a tag)."""
    name = ref.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def _add_shard(matrix: Matrix, shard: Shard) -> None:
    doc = shard.document
    for arch, info in doc["archs"].items():
        if arch not in matrix.archs:
            matrix.archs.append(arch)
        line = matrix.arch_lines.setdefault(arch, ArchInfoLine(arch, how=str(info["how"])))
        line.run = {**info["run"], "shard": shard.name}
        factor = info.get("emulation_factor")
        line.emulation_factor = float(factor) if isinstance(factor, int | float) else None
        line.wall_time += float(info.get("wall_time") or 0.0)
        matrix.collected.setdefault(arch, []).extend(map(str, info["collected"]))
        matrix.deselected.setdefault(arch, []).extend(map(str, info["deselected"]))
    for ref, per_arch in doc["images"].items():
        for arch, entry in per_arch.items():
            for check in entry["checks"]:
                matrix.add(Outcome(
                    test=check["test"], arch=arch, outcome=check["outcome"],
                    duration=float(check.get("duration") or 0.0),
                    failure_class=check.get("failure_class"), message=check.get("message"),
                    image=None if ref == TESTS_KEY else ref, digest=check.get("digest"),
                ))
            if ref != TESTS_KEY:
                matrix.note_from_json(ref, arch, entry)
    for ref, per_arch in doc["variants"].items():
        for arch, variant in per_arch.items():
            matrix.variants.setdefault(ref, {}).setdefault(arch, variant)
    for test, per_arch in doc["rest"].items():
        for arch, answers in per_arch.items():
            matrix.rest[test, arch] = answers


def _shard_failures(shard: Shard) -> list[str]:
    problems = []
    status = shard.exitstatus
    if status:
        problems.append(f"shard {shard.name} ({', '.join(shard.archs)}): pytest exited with "
                        f"{status} ({_EXIT_MEANING.get(status, 'failed')})")
    for per_arch in shard.document["images"].values():
        for arch, entry in per_arch.items():
            for check in entry["checks"]:
                if check["outcome"] in FAILING:
                    why = f": {check['message']}" if check.get("message") else ""
                    problems.append(f"{check['outcome'].upper()} {check['test']} on {arch} "
                                    f"({shard.name}){why}")
    return problems


def _not_run(shards: Sequence[Shard]) -> list[str]:
    problems = []
    for shard in shards:
        for arch, info in shard.document["archs"].items():
            ran = _outcomes(shard, arch)
            missing = [t for t in info["collected"] if t not in ran]
            if missing:
                problems.append(f"{arch} ({shard.name}): {len(missing)} collected test(s) have no "
                                f"outcome, e.g. {missing[0]}; the run stopped early")
    return problems


def _compare_rest(shards: Sequence[Shard], reference: str) -> list[Comparison]:
    """Per test and request, every arch's answer against the reference arch's.

    Answers pair up by request text and occurrence (the second ``GET /x`` of a test with the
    second), so an arch whose test took another path is not compared with the wrong request.
    """
    by_test: dict[str, dict[str, dict[tuple[str, int], Answer]]] = {}
    for shard in shards:
        for test, per_arch in shard.document["rest"].items():
            for arch, records in per_arch.items():
                keyed: dict[tuple[str, int], Answer] = {}
                for record in records:
                    try:
                        answer = Answer.from_json(record)
                    except (KeyError, TypeError, ValueError) as exc:
                        raise ShardError(f"shard {shard.name} is a damaged report: REST record "
                                         f"of {test} on {arch}: {exc}; re-run that job") from None
                    seen = sum(1 for request, _ in keyed if request == answer.request)
                    keyed[answer.request, seen] = answer
                by_test.setdefault(test, {})[arch] = keyed
    comparisons = []
    for per_arch in by_test.values():
        ref = reference if reference in per_arch else next(iter(per_arch))
        for key in per_arch[ref]:
            at = {arch: answers[key] for arch, answers in per_arch.items() if key in answers}
            if len(at) > 1:
                comparisons.append(compare_answers(at, ref))
    return comparisons


def _origin(shard: Shard) -> dict[str, Any]:
    doc = shard.document
    return {"path": shard.name, "session": doc.get("session"), "archs": shard.archs,
            "host": doc.get("host"), "plugin_version": doc.get("plugin_version"),
            "exitstatus": shard.exitstatus}
