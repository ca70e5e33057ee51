"""The one rule for matrix row labels: shorten in the middle, keep the start and the parameter."""

from __future__ import annotations

import pytest

from pytest_multiarch.session.report import Matrix, Outcome, shorten_middle

LONG = "tests/test_replication.py::test_data_survives_a_restart_mid_workload[from amd64]"


@pytest.mark.parametrize("width", [12, 20, 30, 40, 60, 79])
def test_shortened_in_the_middle(width: int) -> None:
    shown = shorten_middle(LONG, width)
    assert len(shown) <= width
    assert shown.count("…") == 1
    assert shown.startswith("tests/")
    if width >= 30:
        assert shown.endswith("[from amd64]")


def test_short_names_stay_whole() -> None:
    assert shorten_middle(LONG, len(LONG)) == LONG
    assert shorten_middle("test_x.py::test_ok", 80) == "test_x.py::test_ok"


def test_a_long_parameter_is_cut_across_head_and_parameter() -> None:
    name = "t.py::test[" + "x" * 50 + "]"
    shown = shorten_middle(name, 20)
    assert len(shown) == 20
    assert shown.startswith("t.py::")
    assert shown.endswith("x]")


def test_render_fits_many_archs_in_a_narrow_terminal() -> None:
    archs = ["amd64", "arm64", "s390x", "ppc64le", "arm/v7"]
    matrix = Matrix(list(archs))
    for arch in archs:
        matrix.add(Outcome(LONG, arch, "failed", failure_class="ExecFormatError"))
        matrix.add(Outcome("tests/test_offerings.py::test_healthy", arch, "passed"))
    lines = matrix.render(width=80)
    assert all(len(line) <= 80 for line in lines), [x for x in lines if len(x) > 80]
    assert lines[2].startswith("tests/")


def test_html_matrix_escapes_and_keeps_full_labels() -> None:
    matrix = Matrix(["amd64"])
    matrix.add(Outcome("t.py::test[<b>]", "amd64", "failed", message="x < y"))
    page = matrix.render_html()
    assert "t.py::test[&lt;b&gt;]" in page
    assert 'class="multiarch-failed" title="x &lt; y"' in page
