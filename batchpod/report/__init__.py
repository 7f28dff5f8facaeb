"""``batchpod report``: a results manifest read back and rendered for people, spreadsheets
or a browser.

It must not know the API, the state file or the terminal: the CLI picks where the output
goes and turns the ``ConfigError`` raised for an unusable file into its message and exit
code. Money stays integer cents until it is shown, through ``budget.usd``.

=================  =======================================================================
``load_results``   a results file (YAML or JSON) read and checked, in   (``_load``)
                   pieces; ``drop=REPORT_UNUSED`` leaves out what no
                   rendering shows (stem links, quality scores)
``render_text``    a summary for people, one fact per line              (``_text``)
``render_csv``     one row per job, cells that cannot run as formulas   (``_csv``)
``render_html``    one self-contained page with inline SVG charts       (``_html``)
=================  =======================================================================

Private rooms: ``_values`` (figures shown the same way by every rendering), ``_phases``
(when each job waited, was at AudioPod and was downloaded, from its timestamps) and
``_charts`` (the SVG drawings of those phases and of the spend).
"""

from __future__ import annotations

from batchpod.report._csv import CSV_COLUMNS, render_csv
from batchpod.report._html import render_html
from batchpod.report._load import REPORT_UNUSED, load_results
from batchpod.report._text import render_text

__all__ = [
    "CSV_COLUMNS",
    "REPORT_UNUSED",
    "load_results",
    "render_csv",
    "render_html",
    "render_text",
]
