#!/usr/bin/env python3
"""Build an "edited reel" from real photographs, with every cut and transition known to the frame.

    PYTHONPATH=. .venv/bin/python benchmarks/real_footage.py --out /tmp/avcurate-footage [--fps 25] [--size 640x360]

Writes `reel_<fps>.mp4` (H.264 + AAC, constant frame rate) and `reel_<fps>.json` (the ground truth) into --out.

The pictures are scikit-image's bundled photographs (`skimage.data`: astronaut, coffee, chelsea, rocket,
the Middlebury motorcycle, the Hubble deep field, an immunohistochemistry slide, a retina, and the classic
black-and-white camera man, moon, coins, brick, gravel and grass). Each shot is a slow virtual camera move over
one photograph (pan, tilt, zoom in or out, a little hand-held sway) with per-frame sensor grain, rendered with
numpy/OpenCV and piped to ffmpeg, so every frame's content is known exactly. The edit has what makes shot
detection hard on real footage:

  * hard cuts between unrelated pictures, and between pictures of similar colour (coffee / chelsea, two
    black-and-white pictures, three grey textures), between black-and-white shots, and between two framings of
    the same picture (a wide and a close shot of the same scene);
  * gradual transitions with known frame spans: cross-dissolves and fades through black;
  * distractors that are not cuts: a whip pan and a three-frame flash inside a shot.

The audio bed is espeak-ng reading a fixed text (looped) over quiet pink noise, or pink noise alone when
espeak-ng is missing, so avcurate's probe (which needs both streams) accepts the file.

Ground truth frame numbers are frames of the output file (frame 0 = first frame, at `fps`):
  hard_cuts:    first frame of the new shot
  transitions:  {"first", "last"}: the first and last frame that mix the two shots (or show the fade);
                the new shot owns every frame after `last`
  distractors:  frame spans of the whip pan and the flash (no cut there)
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SEED = 20261126
SPEECH = (
    "This reel is made of still photographs from scikit image. Each shot is a slow camera move over one "
    "picture. Some shots are joined by hard cuts, some by dissolves, and some fade through black. "
    "The ground truth of every cut is written next to the video, frame by frame."
)


@dataclass
class Shot:
    image: str  # skimage.data picture name (see _load)
    seconds: float
    start: tuple[float, float, float]  # crop centre x, y (fractions of the picture) and crop width (fraction)
    end: tuple[float, float, float]
    gray: bool = False  # render in black and white
    sway: float = 0.0  # hand-held sway amplitude, in output pixels
    into: str = "cut"  # how this shot is entered: "cut", "dissolve", "fadeblack"
    into_s: float = 0.0  # transition length (seconds); for fadeblack, fade-out + fade-in together
    flash_at_s: float | None = None  # a 3-frame white flash this long into the shot (a distractor)
    whip: bool = False  # the move is a whip pan: a fast, eased pan (a distractor)


# The edit. Chosen so that similar pictures meet (the hard cases) and every kind of join appears.
SHOTS: list[Shot] = [
    Shot("astronaut", 3.0, (0.50, 0.45, 0.95), (0.45, 0.35, 0.55)),                      # slow zoom in
    Shot("coffee", 2.6, (0.35, 0.50, 0.70), (0.65, 0.50, 0.70)),                         # pan right
    Shot("chelsea", 2.4, (0.50, 0.50, 0.90), (0.50, 0.45, 0.80), sway=2.0),              # similar warm colours
    Shot("rocket", 3.0, (0.50, 0.70, 0.60), (0.50, 0.35, 0.60), into="dissolve", into_s=0.6),  # tilt up
    Shot("motorcycle", 2.8, (0.30, 0.55, 0.60), (0.70, 0.50, 0.60)),                     # pan
    Shot("camera", 3.0, (0.45, 0.40, 0.50), (0.50, 0.50, 1.00), gray=True),              # B/W zoom out
    Shot("moon", 2.2, (0.50, 0.50, 0.90), (0.52, 0.48, 0.80), gray=True),                # B/W -> B/W
    Shot("coins", 2.5, (0.35, 0.50, 0.70), (0.60, 0.50, 0.70), gray=True),               # B/W -> B/W
    Shot("astronaut", 2.5, (0.60, 0.60, 0.60), (0.55, 0.55, 0.65), gray=True, sway=1.5),  # grey version
    Shot("hubble", 3.5, (0.50, 0.50, 0.60), (0.50, 0.50, 0.40), into="fadeblack", into_s=1.0),
    Shot("ihc", 2.4, (0.40, 0.40, 0.70), (0.60, 0.60, 0.70)),
    Shot("retina", 3.0, (0.50, 0.50, 0.90), (0.55, 0.50, 0.60), flash_at_s=1.4),         # flash distractor
    Shot("coffee", 2.0, (0.45, 0.45, 0.40), (0.47, 0.45, 0.38)),                         # close shot ...
    Shot("coffee", 2.0, (0.50, 0.50, 0.95), (0.50, 0.50, 0.90)),                         # ... then wide: same scene
    Shot("chelsea", 2.6, (0.50, 0.45, 0.70), (0.40, 0.45, 0.60), gray=True, into="dissolve", into_s=1.0),
    Shot("camera", 2.4, (0.30, 0.30, 0.40), (0.35, 0.30, 0.40), gray=True),
    Shot("brick", 2.0, (0.30, 0.50, 0.70), (0.70, 0.50, 0.70), gray=True),
    Shot("gravel", 2.2, (0.50, 0.50, 0.80), (0.50, 0.50, 0.60), gray=True),              # grey texture pair
    Shot("grass", 2.4, (0.40, 0.50, 0.80), (0.60, 0.50, 0.80), gray=True),               # ... and a third
    Shot("rocket", 2.0, (0.25, 0.50, 0.45), (0.75, 0.50, 0.45), whip=True),              # whip pan distractor
    Shot("astronaut", 2.5, (0.45, 0.30, 0.35), (0.45, 0.32, 0.30), sway=1.5, into="dissolve", into_s=0.48),
    Shot("ihc", 2.5, (0.50, 0.50, 0.50), (0.50, 0.50, 0.90)),
    Shot("coffee", 2.3, (0.55, 0.50, 0.80), (0.45, 0.50, 0.80), gray=True),
    Shot("hubble", 2.8, (0.30, 0.30, 0.50), (0.40, 0.40, 0.45), into="fadeblack", into_s=0.8),
    Shot("chelsea", 3.0, (0.40, 0.50, 0.75), (0.60, 0.50, 0.75)),
    Shot("motorcycle", 2.2, (0.50, 0.45, 0.45), (0.50, 0.50, 0.50), sway=2.5),
    Shot("retina", 2.5, (0.40, 0.45, 0.40), (0.45, 0.45, 0.35)),
    Shot("camera", 3.0, (0.50, 0.45, 0.60), (0.50, 0.45, 0.90), gray=True, into="dissolve", into_s=0.8),
]


def _load(name: str) -> np.ndarray:
    """float32 RGB [h, w, 3] in 0..255."""
    from skimage import data

    if name == "motorcycle":
        img = data.stereo_motorcycle()[0]
    elif name == "hubble":
        img = data.hubble_deep_field()
    elif name == "ihc":
        img = data.immunohistochemistry()
    else:
        img = getattr(data, name)()
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3]).astype(np.float32)


def _ease(u: float) -> float:
    return u * u * (3 - 2 * u)


def _whip(u: float) -> float:
    """Hold, then a fast pan in the middle fifth of the shot, then hold."""
    return float(np.clip((u - 0.4) / 0.2, 0.0, 1.0)) ** 1.0


class _ShotRenderer:
    def __init__(self, shot: Shot, size: tuple[int, int], fps: float, n_frames: int, rng: np.random.Generator):
        import cv2

        self.cv2 = cv2
        self.shot, self.size, self.fps, self.n = shot, size, fps, n_frames
        img = _load(shot.image)
        if shot.gray:
            y = img @ np.array([0.299, 0.587, 0.114], np.float32)
            img = np.repeat(y[:, :, None], 3, axis=2)
        self.img = img
        self.rng = rng
        self.phase = rng.uniform(0, 2 * math.pi, size=2)

    def frame(self, k: int) -> np.ndarray:
        """Frame k of the shot (k may run past the shot's own length during a dissolve out of it)."""
        W, H = self.size
        ih, iw = self.img.shape[:2]
        u = min(max(k / max(self.n - 1, 1), 0.0), 1.0)
        e = _whip(u) if self.shot.whip else _ease(u)
        cx, cy, cw = (a + (b - a) * e for a, b in zip(self.shot.start, self.shot.end))
        # Crop of width cw * picture width and the output's aspect, clamped into the picture.
        crop_w = min(cw * iw, iw, ih * W / H)
        crop_h = crop_w * H / W
        x0 = min(max(cx * iw - crop_w / 2, 0.0), iw - crop_w)
        y0 = min(max(cy * ih - crop_h / 2, 0.0), ih - crop_h)
        s = crop_w / W  # source pixels per output pixel
        t = k / self.fps
        dx = self.shot.sway * math.sin(2 * math.pi * 0.7 * t + self.phase[0])
        dy = self.shot.sway * 0.6 * math.sin(2 * math.pi * 1.1 * t + self.phase[1])
        m = np.array([[s, 0, x0 + dx * s], [0, s, y0 + dy * s]], np.float32)
        out = self.cv2.warpAffine(
            self.img, m, (W, H), flags=self.cv2.INTER_LINEAR | self.cv2.WARP_INVERSE_MAP,
            borderMode=self.cv2.BORDER_REFLECT,
        )
        if self.shot.flash_at_s is not None:
            f0 = round(self.shot.flash_at_s * self.fps)
            if f0 <= k < f0 + 3:
                out = out * 0.3 + 255 * 0.7 * (1.0 - 0.25 * (k - f0))
        return out


def _grain(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(0.0, 2.5, frame.shape[:2]).astype(np.float32)[:, :, None]  # luma grain
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


@dataclass
class Truth:
    fps: float
    width: int
    height: int
    n_frames: int
    hard_cuts: list[int] = field(default_factory=list)
    transitions: list[dict] = field(default_factory=list)
    distractors: list[dict] = field(default_factory=list)
    shots: list[dict] = field(default_factory=list)


def render(out_dir: Path, fps: float = 25.0, size: tuple[int, int] = (640, 360), crf: int = 18) -> tuple[Path, Path]:
    """Render the reel; returns (video path, ground-truth JSON path). Deterministic for a given fps and size."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{fps:g}".replace(".", "_")
    video_path, truth_path = out_dir / f"reel_{tag}.mp4", out_dir / f"reel_{tag}.json"
    rng = np.random.default_rng(SEED)
    W, H = size
    truth = Truth(fps=fps, width=W, height=H, n_frames=0)

    with tempfile.TemporaryDirectory(prefix="avcurate-reel-") as tmp:
        audio = _audio_bed(Path(tmp), sum(s.seconds for s in SHOTS) + 5)
        enc = subprocess.Popen(
            ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", f"{fps:g}",
             "-i", "-", "-i", str(audio), "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "medium",
             "-crf", str(crf), "-pix_fmt", "yuv420p", "-g", str(int(round(fps * 4))), "-threads", "1",
             "-c:a", "aac", "-b:a", "96k", "-shortest", "-movflags", "+faststart", str(video_path)],
            stdin=subprocess.PIPE,
        )
        assert enc.stdin is not None
        written = 0

        def emit(frame: np.ndarray) -> None:
            nonlocal written
            enc.stdin.write(_grain(frame, rng).tobytes())
            written += 1

        previous: _ShotRenderer | None = None
        prev_k = 0  # next frame of `previous` still to show
        for i, shot in enumerate(SHOTS):
            n = int(round(shot.seconds * fps))
            cur = _ShotRenderer(shot, size, fps, n, rng)
            k0 = 0
            if previous is not None:
                if shot.into == "cut":
                    truth.hard_cuts.append(written)
                elif shot.into == "dissolve":
                    t = int(round(shot.into_s * fps))
                    first = written
                    for j in range(t):
                        a = (j + 1) / (t + 1)
                        emit((1 - a) * previous.frame(prev_k + j) + a * cur.frame(j))
                    truth.transitions.append({"kind": "dissolve", "first": first, "last": written - 1})
                    k0 = t
                elif shot.into == "fadeblack":
                    t = int(round(shot.into_s * fps))
                    t_out, t_in = t // 2, t - t // 2
                    first = written
                    for j in range(t_out):
                        emit(previous.frame(prev_k + j) * (1 - (j + 1) / (t_out + 1)))
                    for j in range(t_in):
                        emit(cur.frame(j) * ((j + 1) / (t_in + 1)))
                    truth.transitions.append({"kind": "fadeblack", "first": first, "last": written - 1})
                    k0 = t_in
                else:
                    raise ValueError(shot.into)
            shot_first = written
            for k in range(k0, n):
                emit(cur.frame(k))
            if shot.flash_at_s is not None:
                f0 = shot_first - k0 + round(shot.flash_at_s * fps)
                truth.distractors.append({"kind": "flash", "first": f0, "last": f0 + 2})
            if shot.whip:
                truth.distractors.append(
                    {"kind": "whip_pan", "first": shot_first + int(0.4 * (n - 1)), "last": shot_first + int(0.6 * (n - 1))}
                )
            truth.shots.append({"image": shot.image, "gray": shot.gray, "first": shot_first, "last": written - 1,
                                "into": shot.into})
            previous, prev_k = cur, n
        enc.stdin.close()
        if enc.wait() != 0:
            raise RuntimeError("ffmpeg failed to encode the reel")
    truth.n_frames = written
    doc = asdict(truth)
    doc["source"] = (
        "benchmarks/real_footage.py: scikit-image photographs (skimage.data), virtual camera moves, "
        f"rendered at {W}x{H}, {fps:g} fps, seed {SEED}"
    )
    truth_path.write_text(json.dumps(doc, indent=1))
    return video_path, truth_path


def _audio_bed(tmp: Path, seconds: float) -> Path:
    """Speech (espeak-ng, looped) over quiet pink noise; pink noise alone without espeak-ng. 48 kHz mono WAV."""
    out = tmp / "bed.wav"
    noise = f"anoisesrc=color=pink:amplitude=0.03:seed=7:sample_rate=48000:duration={seconds:.2f}"
    if shutil.which("espeak-ng"):
        speech = tmp / "speech.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(speech), SPEECH], check=True)
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(speech), "-f", "lavfi", "-i", noise,
             "-filter_complex", "[0:a]aresample=48000,volume=0.8[s];[s][1:a]amix=inputs=2:duration=shortest:normalize=0",
             "-t", f"{seconds:.2f}", "-ac", "1", str(out)],
            check=True,
        )
    else:
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", noise, "-ac", "1", str(out)], check=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--fps", type=float, action="append", help="frame rate (repeatable; default 25)")
    parser.add_argument("--size", default="640x360", help="WxH (default 640x360)")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    for fps in args.fps or [25.0]:
        video, truth = render(Path(args.out), fps, (w, h))
        doc = json.loads(truth.read_text())
        print(f"{video}: {doc['n_frames']} frames, {len(doc['hard_cuts'])} hard cuts, "
              f"{len(doc['transitions'])} transitions; truth in {truth}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
