"""The run report: `report.html` in an output folder, built from that folder alone (`avcurate report OUT`).

One self-contained page (inline CSS and SVG charts, no script, nothing from the network): the run's record and
configuration, the ledger's story, rejections by rule, a histogram of every score with the rules' thresholds,
kept and rejected example clips (previews in `report_files/` beside it), provenance from the manifest columns,
and where the time went. Works on gs:// and s3:// outputs alike, through Beam's FileSystems.
"""

from __future__ import annotations

from typing import Any

PAGE = "report.html"
# Each preview decodes at most one clip and encodes at most a few seconds of it: well under a second of CPU on
# a sound file. One that takes this long is stuck (a pipe, a stalled mount, a decoder looping on a damaged file).
PREVIEW_TIMEOUT_S = 60.0

__all__ = ["NotAnOutput", "PAGE", "write_report"]


class NotAnOutput(Exception):
    """The folder holds no finished run to report on; the message says what is missing."""


def write_report(
    output_dir: str, preview_timeout_s: float = PREVIEW_TIMEOUT_S, summary: dict[str, Any] | None = None
) -> str:
    """Write `report.html` and its `report_files/` (replacing any earlier ones) into a finished output; the
    page's path. NotAnOutput when the folder holds no finished run. Previews are rendered in a sandboxed child
    process, each stopped after `preview_timeout_s`. `summary`: the output's `summarize`, when the caller has it
    (`avcurate run` printed it), so it is not read again."""
    # Imported here: the sandbox's child imports this package to render previews, and needs none of it
    # (matplotlib, Beam).
    from ..config import DecodeConfig
    from ..fsutil import delete_tree, write_bytes
    from ..sandbox import Sandbox
    from .examples import choose_examples, rejected_rows_by_rule
    from . import provenance as meta
    from .gather import gather
    from .indexfile import read_columns
    from .page import render_page
    from .previews import FILES, write_previews
    from .scores import clip_scores, config_rules, wants_zero_shot

    data = gather(output_dir, summary)
    out = data.output
    rules = config_rules(data.config)
    examples = choose_examples(data.index, data.index_path)
    delete_tree(f"{out}/{FILES}")  # previews of clips no longer chosen must not linger
    chosen = [*examples.kept, *(e for picked in examples.rejected.values() for e in picked)]
    decode = (data.config or {}).get("decode") or {}
    sandbox = Sandbox(int(decode.get("memory_limit_mb") or DecodeConfig.memory_limit_mb), _storage_options())
    try:
        previews = write_previews(out, chosen, sandbox, preview_timeout_s)
    finally:
        sandbox.close()
    # The columns with a value per source or per distinct value are read as dictionaries, each for its part alone.
    zero_shot = None
    if wants_zero_shot(data.config):
        zero_shot = read_columns(data.index_path, ["zero_shot"], dictionary=["zero_shot"])
    scores = clip_scores(data.index, rules, zero_shot["zero_shot"] if zero_shot and zero_shot.num_columns else None)
    del zero_shot
    provenance = meta.provenance(read_columns(data.index_path, meta.INDEX_COLUMNS, meta.DICTIONARY_COLUMNS))
    page = render_page(data, rules, scores, rejected_rows_by_rule(data.index), examples, previews, provenance)
    path = f"{out}/{PAGE}"
    write_bytes(path, page.encode("utf-8"))
    return path


def _storage_options() -> dict[str, Any] | None:
    """The options Beam's FileSystems were given (an S3 endpoint and keys, ...), for a child reading remote
    sources; None when none were set."""
    from ..beam.transforms import storage_options
    from ..fsutil import filesystems

    options = getattr(filesystems(), "_pipeline_options", None)
    return (storage_options(options) or None) if options is not None else None
