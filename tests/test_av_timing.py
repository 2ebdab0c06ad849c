"""Pictures and sound stay on the same instant through the pipeline, at every common source frame rate.

Sources whose flashes and tone bursts start together (events on the source's own frame grid, at varied phases
against the 25 fps output grid) go through `process_source` with the default config; the kept clips, as
staged for the shards, are measured with `avmeter`, which uses only the ffmpeg/ffprobe CLI. The clips' mean
offset must be the source's own within 5 ms. What is left is the rounding of each event to the output grid,
computed exactly from the event times (`avmeter.rounding_bias_ms`). FFmpeg's own `fps` filter sends every tie (a
frame exactly between two output instants) to the later slot, so a 50 fps source's odd-frame events all come
20 ms late (-11 ms on average here); avcurate sends ties to the even slot, which keeps the mean at zero.

Picking the frame on screen at each output instant (the decoder's old rule) leaves pictures about 20 ms late
against their sound at rates off the 25 fps grid, which this test catches.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import avmeter
from avcurate.config import Config
from avcurate.model import KEPT, Source
from avcurate.process import process_source

TOLERANCE_MS = 5.0
RATES = avmeter.RATES


def curated_clips(source: Path, work: Path) -> list[Path]:
    """The pipeline's kept clips for one source, as staged for the shards."""
    staging, scratch = work / "staging", work / "scratch"
    staging.mkdir()
    scratch.mkdir()
    result = process_source(Source.from_uri(str(source)), Config(), str(staging), str(scratch))
    return [Path(c.staged_path) for c in result.clips if c.status == KEPT and c.staged_path]


@pytest.mark.parametrize("name", list(RATES))
def test_output_clips_keep_the_source_offset(tmp_path: Path, name: str) -> None:
    source = tmp_path / f"source_{name}.mp4"
    times = avmeter.make_source(source, RATES[name], seed=sorted(RATES).index(name) + 1)
    assert len(times) >= 20

    own = avmeter.measure(source)
    # The meter sees every event of the source, and the source itself is in sync.
    assert (own.flashes, own.beeps, own.events) == (len(times), len(times), len(times))
    assert abs(own.mean_ms) < 2.0, own.offsets_ms

    clips = curated_clips(source, tmp_path)
    assert clips, "the source must give kept clips"
    out = avmeter.measure_all(clips)
    assert out.events >= len(times) - 3  # an event at a clip boundary may go unseen
    assert abs(out.mean_ms - own.mean_ms) <= TOLERANCE_MS, (
        f"{name} fps: output offset {out.mean_ms:+.1f} ms, source {own.mean_ms:+.1f} ms; "
        f"per event {[round(x, 1) for x in out.offsets_ms]}"
    )
    # What remains is the frame grid's rounding of these very events, as the rule predicts (ties to even).
    assert abs(out.mean_ms - own.mean_ms - avmeter.rounding_bias_ms(times, 25)) <= 1.5
