"""pytest-html: ``arch``, ``digest`` and ``ran`` columns in its results table, the matrix in its
summary.

Registered by ``pytest_configure`` only when pytest-html is loaded (its hookspecs must exist
before an implementation of them is registered); without it nothing here is imported.
pytest-html 4 renders the table in the browser from cells given as HTML strings.
"""

from __future__ import annotations

import html
from typing import Any

import pytest

from pytest_multiarch.session.state import State

#: Where the columns go: after Result and Test, before Duration.
COLUMN_AT = 2
SHORT_DIGEST = 12  # hex digits, as `docker images` shows image ids


class HtmlColumns:
    """pytest-html hook implementations for one session."""

    def __init__(self, state: State) -> None:
        self.state = state

    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        cells[COLUMN_AT:COLUMN_AT] = [
            '<th class="sortable" data-column-type="arch">arch</th>',
            '<th class="sortable" data-column-type="digest">digest</th>',
            '<th class="sortable" data-column-type="ran">ran</th>',
        ]

    def pytest_html_results_table_row(self, report: pytest.TestReport, cells: list[str]) -> None:
        props = dict(report.user_properties)
        arch = props.get("arch")
        digest = props.get("digest")
        arch_text = str(arch) if isinstance(arch, str) else ""
        full = str(digest) if isinstance(digest, str) else ""
        short = full.split(":", 1)[-1][:SHORT_DIGEST] if full else ""
        ran = self.ran(arch_text) if arch_text else ""
        cells[COLUMN_AT:COLUMN_AT] = [
            f'<td class="col-arch">{html.escape(arch_text)}</td>',
            f'<td class="col-digest" title="{html.escape(full)}">{html.escape(short)}</td>',
            f'<td class="col-ran">{html.escape(ran)}</td>',
        ]

    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str], session: Any
    ) -> None:
        table = self.state.matrix.render_html()
        if table:
            postfix.append(table)

    def ran(self, arch: str) -> str:
        """``native on HOST`` or ``emulated on qemu 7.2.17, CPU max`` for *arch*."""
        from pytest_multiarch.session.bindings import ran_description

        return ran_description(self.state, arch)
