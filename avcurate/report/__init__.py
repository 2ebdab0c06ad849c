"""The run report: `report.html` in an output folder, built from that folder alone (`avcurate report OUT`).

One self-contained page (inline CSS and SVG charts, no script, nothing from the network): the run's record and
configuration, the ledger's story, rejections by rule, a histogram of every score with the rules' thresholds,
kept and rejected example clips (previews in `report_files/` beside it), provenance from the manifest columns,
and where the time went. Works on gs:// and s3:// outputs alike, through Beam's FileSystems.
"""

from __future__ import annotations

from ..fsutil import delete_tree, write_bytes
from .examples import choose_examples, rejected_rows_by_rule
from .gather import NotAnOutput, gather
from .page import render_page
from .previews import FILES, write_previews
from .provenance import provenance
from .scores import clip_scores, config_rules

PAGE = "report.html"

__all__ = ["NotAnOutput", "PAGE", "write_report"]


def write_report(output_dir: str) -> str:
    """Write `report.html` and its `report_files/` (replacing any earlier ones) into a finished output; the
    page's path. NotAnOutput when the folder holds no finished run."""
    data = gather(output_dir)
    out = data.output
    rules = config_rules(data.config)
    examples = choose_examples(data.index)
    delete_tree(f"{out}/{FILES}")  # previews of clips no longer chosen must not linger
    chosen = [*examples.kept, *(e for picked in examples.rejected.values() for e in picked)]
    previews = write_previews(out, chosen)
    page = render_page(data, rules, clip_scores(data.index, rules), rejected_rows_by_rule(data.index), examples,
                       previews, provenance(data.index))  # fmt: skip
    path = f"{out}/{PAGE}"
    write_bytes(path, page.encode("utf-8"))
    return path
