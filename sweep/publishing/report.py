"""A campaign's report: one self-contained HTML file (inline CSS, PNGs as data URIs, no script).

It answers, per operation, which model won, how the search got there, which hyperparameters
mattered, which normalisation scheme made the difference, and how the winner does outside the
training range. It reads storage only: `report_data` gathers, `report_html` renders, and this
module checks where the page goes and writes it.
"""

from __future__ import annotations

import os
from pathlib import Path

from storage import Database
from sweep.publishing.outputs import check_output_path, write_atomically
from sweep.publishing.report_data import gather_report
from sweep.publishing.report_html import render_report

__all__ = ["build_report"]


def build_report(
    database: Database, campaign: str, output: str | os.PathLike[str], *, force: bool = False
) -> Path:
    """Write the campaign's HTML report to `output` and return it (an existing file only with
    `force`; never the database itself).

    Raises:
        ConfigError: `output` is not a path the report may be written to (see
            `sweep.publishing.outputs`). OutputError: the file system refused the write.
        ReportError: the SQLite file does not exist; the campaign has neither studies nor
            models.
        storage.StorageError: The database cannot be reached or read.
    """
    path = Path(output)
    check_output_path(path, force=force, database=database.sqlite_path)
    report = gather_report(database, campaign)
    document = render_report(report, password=database.url.password)
    # Again: gathering took a while.
    check_output_path(path, force=force, database=database.sqlite_path)
    write_atomically(path, document.encode("utf-8"), force=force)
    return path
