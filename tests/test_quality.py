"""Picture quality: small sources are not passed off as full size, blurry pictures are scored and dropped."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
import skimage.data

from avcurate.config import Config, DecodeConfig
from avcurate.model import KEPT, REJECTED, Source
from avcurate.process import process_source
from avcurate.writers.tables import ledger_row

COFFEE = Path(skimage.data.__file__).parent / "coffee.png"  # a real photograph, 400x600


def pan(path: Path, size: str, extra: str = "") -> Path:
    """3 s panning over the photograph at `size`, with pink noise for sound; `extra` filters after the pan."""
    w, h = size.split("x")
    vf = f"scale=-2:{int(h) * 5 // 4},fps=25,crop={w}:{h}:x='t*20':y=0{extra},format=yuv420p"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-loop", "1", "-t", "3", "-i", str(COFFEE),
                    "-f", "lavfi", "-i", "anoisesrc=d=3:c=pink:a=0.2:seed=1", "-vf", vf,
                    "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-c:a", "aac", "-shortest", str(path)],
                   check=True)  # fmt: skip
    return path


def curate(path: Path, tmp_path: Path, cfg: Config = Config()):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return process_source(Source.from_uri(str(path)), cfg, str(tmp_path / "staging"), str(tmp_path))


def test_a_small_source_keeps_its_size_and_is_rejected_for_it(tmp_path: Path) -> None:
    small = pan(tmp_path / "small.mp4", "160x90")
    result = curate(small, tmp_path)
    assert result.clips and all(c.status == REJECTED for c in result.clips)
    assert all((c.width, c.height, c.source_width, c.source_height) == (160, 90, 160, 90) for c in result.clips)
    assert all("source_short_side: 90 < min 256" in c.reasons for c in result.clips)
    assert "source_short_side" in ledger_row(result)["reasons"]
    # Upscaling only when asked for; the rule still says the source is small.
    upscaled = curate(small, tmp_path, dataclasses.replace(Config(), decode=DecodeConfig(upscale=True)))
    assert {(c.width, c.height) for c in upscaled.clips} == {(456, 256)}
    assert all(c.source_width == 160 for c in upscaled.clips)


@pytest.mark.parametrize("blur", [3.0, 6.0])
def test_a_blurred_copy_scores_low_and_is_dropped(tmp_path: Path, blur: float) -> None:
    sharp = curate(pan(tmp_path / "sharp.mp4", "960x540"), tmp_path / "a")
    blurred = curate(pan(tmp_path / "blurred.mp4", "960x540", f",gblur=sigma={blur}"), tmp_path / "b")
    assert [c.status for c in sharp.clips] == [KEPT]
    assert [c.status for c in blurred.clips] == [REJECTED]
    assert any(r.startswith("sharpness: ") and r.endswith("< min 25") for r in blurred.clips[0].reasons)
    assert sharp.clips[0].scores.sharpness > 4 * blurred.clips[0].scores.sharpness
