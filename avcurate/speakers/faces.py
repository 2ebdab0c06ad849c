"""Faces in a clip's frames: detected every few frames, tracked, interpolated in between, cropped every frame.

Detection is the expensive part (MTCNN costs about 70 ms on a 512x256 frame on one core), so it runs
`faces.detect_fps` times a second; boxes and landmarks are interpolated linearly between detections and
smoothed over half a second, and each track's lip-sync backend keeps its crop of every frame. Frames, and the
pixels around each face, wait only until the next detection and half a smoothing window: memory is a few frames
plus the crops (1.5 KB per frame per face for the model-free backend, 150 KB for SyncNet's 224-pixel crops).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ..config import FacesConfig
from .base import Face, FaceDetector, LipSyncBackend

_MATCH_IOU = 0.3  # a detection continues a track whose last box overlaps it this much
_MAX_MISSED = 1  # detections a track may miss (a turned head, a blink of the detector) before it ends


@functools.cache
def _mtcnn(min_face_px: int):  # type: ignore[no-untyped-def]
    """Loaded once per process: the weights ship in facenet-pytorch's wheel."""
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device="cpu", min_face_size=min_face_px, post_process=False)


class MtcnnFaces:
    """MTCNN (facenet-pytorch): boxes, scores and five landmarks, mouth corners among them."""

    name = "mtcnn"

    def __init__(self, cfg: FacesConfig) -> None:
        self.cfg = cfg
        self.model = _mtcnn(cfg.min_face_px)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        import torch

        with torch.inference_mode():
            boxes, scores, landmarks = self.model.detect(rgb, landmarks=True)
        if boxes is None:
            return []
        # Under NumPy 2, facenet-pytorch 2.5.3 hands back object arrays: make them numbers.
        boxes = np.asarray(boxes.tolist(), np.float64).reshape(-1, 4)
        scores = np.asarray(np.asarray(scores).tolist(), np.float64).reshape(-1)
        landmarks = np.asarray(landmarks.tolist(), np.float64).reshape(-1, 5, 2)
        return [
            Face((float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(s), l)
            for b, s, l in zip(boxes, scores, landmarks)
            if s >= self.cfg.min_score and min(b[2] - b[0], b[3] - b[1]) >= self.cfg.min_face_px
        ]


@functools.cache
def _haar():  # type: ignore[no-untyped-def]
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if cascade.empty():
        raise RuntimeError("OpenCV's Haar face cascade is missing: install opencv-python-headless 4.x (5.x dropped it)")
    return cascade


class HaarFaces:
    """OpenCV's frontal-face Haar cascade: boxes only, no landmarks (the mouth is placed by the box)."""

    name = "haar"

    def __init__(self, cfg: FacesConfig) -> None:
        self.cfg = cfg
        self.cascade = _haar()

    def detect(self, rgb: np.ndarray) -> list[Face]:
        import cv2

        gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        size = self.cfg.min_face_px
        found, _, weights = self.cascade.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(size, size), outputRejectLevels=True
        )
        # The cascade accepts a face on 5 neighbouring hits (min_score is MTCNN's); its level weight, squashed
        # to 0..1, is kept as the score for the record.
        return [
            Face((float(x), float(y), float(x + w), float(y + h)), float(1.0 / (1.0 + np.exp(-float(weight)))))
            for (x, y, w, h), weight in zip(np.asarray(found).reshape(-1, 4), np.asarray(weights).reshape(-1))
        ]


def build_face_detector(cfg: FacesConfig) -> FaceDetector | None:
    if cfg.detector is None:
        return None
    return {"mtcnn": MtcnnFaces, "haar": HaarFaces}[cfg.detector](cfg)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def interpolate(a: Face, b: Face, weight: float) -> Face:
    """The face `weight` of the way from a to b (box, score and landmarks linearly)."""
    box = tuple(float(x) for x in (1 - weight) * np.asarray(a.box) + weight * np.asarray(b.box))
    landmarks = None
    if a.landmarks is not None and b.landmarks is not None:
        landmarks = (1 - weight) * a.landmarks + weight * b.landmarks
    return Face(box, (1 - weight) * a.score + weight * b.score, landmarks)  # type: ignore[arg-type]


_REGION_MARGIN = 0.6  # a face's region kept per frame: its box grown by this much of its size on every side
_SMOOTH_S = 0.5  # boxes are averaged over this long (centred) before cropping, as SyncNet's pipeline smooths them


@dataclass(eq=False)  # compared by identity: tracks hold arrays
class FaceTrack:
    """One face followed through a clip: its detections, every frame's face, and the backend's crop of each.

    Crops are made from faces smoothed over time (`crop_ready`): a detector's box jitters by a pixel or two on a
    still face, which would otherwise read as a moving mouth. A frame's pixels around the face wait until its
    smoothing window is known, then only the crop is kept.
    """

    track_id: int
    detections: list[tuple[int, Face]]  # (frame in the clip, face) where the detector found it
    faces: dict[int, Face] = field(default_factory=dict)  # frame in the clip -> face, interpolated between detections
    regions: dict[int, tuple[np.ndarray, int, int]] = field(default_factory=dict)  # frame -> (rgb, left, top), until cropped
    crops: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> the lip-sync backend's crop
    missed: int = 0

    def keep(self, t: int, rgb: np.ndarray, face: Face) -> None:
        x0, y0, x1, y1 = face.box
        grow = _REGION_MARGIN * max(x1 - x0, y1 - y0)
        height, width = rgb.shape[:2]
        left, top = max(int(x0 - grow), 0), max(int(y0 - grow), 0)
        right, bottom = min(int(np.ceil(x1 + grow)), width), min(int(np.ceil(y1 + grow)), height)
        self.faces[t] = face
        self.regions[t] = (rgb[top:bottom, left:right].copy(), left, top)

    @property
    def first_frame(self) -> int:
        return self.detections[0][0]  # a track starts with the face it was found on (kept at that frame)

    @property
    def last_frame(self) -> int:
        return next(reversed(self.faces))  # `keep` is called in frame order

    def crop_ready(self, backend: LipSyncBackend, window: int, final: bool = False) -> None:
        """Crop every frame whose smoothing window is known (all of them when `final`), and let its pixels go:
        a frame's region waits at most half a window past the track's last detection."""
        known = self.last_frame
        ahead = window - 1 - window // 2
        for t in sorted(self.regions):
            if not final and t + ahead > known:
                break
            region, left, top = self.regions.pop(t)
            self.crops[t] = backend.crop(region, _shifted(self.smoothed(t, window, known), -left, -top))

    def smoothed(self, t: int, window: int, last: int) -> Face:
        """The face at frame t, boxes and landmarks averaged over `window` frames centred on t; the window is
        held at the track's first frame and at `last` (edge values repeated), so streaming and the end agree."""
        first = self.first_frame
        faces = [self.faces[min(max(k, first), last)] for k in range(t - window // 2, t + window - window // 2)]
        box = np.mean([f.box for f in faces], axis=0)
        marks = None
        if all(f.landmarks is not None for f in faces):
            marks = np.mean([f.landmarks for f in faces], axis=0)
        return Face(tuple(float(v) for v in box), self.faces[t].score, marks)  # type: ignore[arg-type]

    def crop_stack(self) -> np.ndarray:
        """Crops of frames first..last, in order (every frame of a track's span has one)."""
        return np.stack([self.crops[t] for t in range(self.first_frame, self.last_frame + 1)])


def _shifted(face: Face, dx: float, dy: float) -> Face:
    x0, y0, x1, y1 = face.box
    marks = None if face.landmarks is None else face.landmarks + np.array([dx, dy])
    return Face((x0 + dx, y0 + dy, x1 + dx, y1 + dy), face.score, marks)


class FaceTracker:
    """Streams a clip's frames; `finish` returns its face tracks."""

    def __init__(self, detector: FaceDetector, backend: LipSyncBackend, detect_every: int, fps: float) -> None:
        self.detector, self.backend, self.detect_every = detector, backend, max(1, detect_every)
        self.window = max(1, round(_SMOOTH_S * fps))
        self.live: list[FaceTrack] = []
        self.done: list[FaceTrack] = []
        self.pending: list[tuple[int, np.ndarray]] = []  # frames since the oldest live track's last detection
        self.next_id = 0

    def add(self, t: int, rgb: np.ndarray) -> None:
        """Frame t of the clip (0, 1, 2, ... in order)."""
        self.pending.append((t, rgb))
        if t % self.detect_every:
            return
        faces = self.detector.detect(rgb)
        matched = self._match(faces)
        for track, face in matched:
            last_t, last_face = track.detections[-1]
            track.detections.append((t, face))
            track.missed = 0
            for frame_t, frame in self.pending:
                if last_t < frame_t <= t:
                    track.keep(frame_t, frame, interpolate(last_face, face, (frame_t - last_t) / (t - last_t)))
            track.crop_ready(self.backend, self.window)
        taken = {id(face) for _, face in matched}
        for track in [track for track in self.live if track not in [m[0] for m in matched]]:
            track.missed += 1
            if track.missed > _MAX_MISSED:
                self.live.remove(track)
                track.crop_ready(self.backend, self.window, final=True)
                self.done.append(track)
        for face in faces:
            if id(face) not in taken:
                track = FaceTrack(self.next_id, [(t, face)])
                track.keep(t, rgb, face)
                self.next_id += 1
                self.live.append(track)
        oldest = min((track.detections[-1][0] for track in self.live), default=t)
        self.pending = [(frame_t, frame) for frame_t, frame in self.pending if frame_t >= oldest]

    def _match(self, faces: list[Face]) -> list[tuple[FaceTrack, Face]]:
        """Greedy, best overlap first: each live track takes at most one face."""
        pairs = sorted(
            ((iou(track.detections[-1][1].box, face.box), i, j) for i, track in enumerate(self.live) for j, face in enumerate(faces)),
            key=lambda p: (-p[0], p[1], p[2]),
        )
        used_tracks: set[int] = set()
        used_faces: set[int] = set()
        out = []
        for overlap, i, j in pairs:
            if overlap < _MATCH_IOU or i in used_tracks or j in used_faces:
                continue
            used_tracks.add(i)
            used_faces.add(j)
            out.append((self.live[i], faces[j]))
        return out

    def finish(self, min_frames: int) -> list[FaceTrack]:
        """Tracks seen at the last detection keep their last face to the clip's end; tracks shorter than
        `min_frames` are dropped. Ids are renumbered 0, 1, ... in order of first appearance (then of x)."""
        for track in self.live:
            last_t, last_face = track.detections[-1]
            if track.missed == 0:
                for frame_t, frame in self.pending:
                    if frame_t > last_t:
                        track.keep(frame_t, frame, last_face)
        tracks = [t for t in self.done + self.live if t.last_frame - t.first_frame + 1 >= min_frames]
        for track in tracks:
            track.crop_ready(self.backend, self.window, final=True)
        tracks.sort(key=lambda t: (t.first_frame, t.detections[0][1].box[0]))
        for new_id, track in enumerate(tracks):
            track.track_id = new_id
        self.live, self.done, self.pending = [], [], []
        return tracks
