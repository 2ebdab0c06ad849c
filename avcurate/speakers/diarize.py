"""Offline diarization with weights that ship in wheels: Silero VAD, speaker embeddings of windows, clustering.

Speech segments are cut into windows (window_s every hop_s); each window gets a speaker embedding; windows are
clustered (average linkage on cosine similarity; merging stops when the two closest clusters are less
similar than `threshold`, and never stops above `max_speakers`; windows shorter than window_s and clusters
covering under min_cluster_s of speech join the nearest larger cluster instead); every 10 ms of speech takes
the cluster of the nearest window centre in its segment; turns shorter than min_turn_s inside a segment go to the
speaker beside them.

Overlapped speech is not detected: each instant of speech gets one speaker. Windows that mix two voices embed
away from both voices (they form clusters of their own, not a bridge between two), so a "similar to both
centroids" rule never fires; measured in benchmarks/bench_diarization.py, see docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from ..config import DiarizationConfig, VadConfig
from ..sandbox import heartbeat
from .base import SPEECH_RATE, Segment, Turn, relabel
from .embed import SpeakerEncoder
from .vad import SileroVad, to_speech_rate

RESOLUTION_S = 0.01  # turn boundaries fall on this grid
MAX_CLUSTERED = 2000  # windows clustered exactly (O(n^2) memory); longer sources cluster a spread-out subset
TARGET_DBFS = -30.0  # the speaker encoder was trained on speech normalised to this level


@dataclass(frozen=True)
class Window:
    """One embedded stretch of speech, in samples at 16 kHz, and the segment it lies in."""

    start: int
    end: int
    segment: int

    @property
    def centre_s(self) -> float:
        return (self.start + self.end) / 2 / SPEECH_RATE


class OfflineDiarizer:
    """Who speaks when (Diarizer), CPU-friendly and weight-download-free."""

    name = "offline"
    detects_overlap = False  # each instant gets one speaker (docs/speakers.md)

    def __init__(self, cfg: DiarizationConfig, vad: VadConfig, encoder: SpeakerEncoder | None = None) -> None:
        self.cfg = cfg
        self.vad = SileroVad(vad)
        self.encoder = encoder or SpeakerEncoder()

    def diarize(self, audio: np.ndarray, rate: int) -> list[Turn]:
        return self.run(audio, rate)[1]

    def run(self, audio: np.ndarray, rate: int) -> tuple[list[Segment], list[Turn]]:
        """Speech segments and relabelled turns, so a caller that needs both runs the VAD once."""
        audio = to_speech_rate(audio, rate)
        segments = self.vad.segments(audio, SPEECH_RATE)
        windows = self.windows(segments)
        labels = self.cluster(self.embed(audio, windows), windows)
        return segments, self.turns(segments, windows, labels)

    def windows(self, segments: list[Segment]) -> list[Window]:
        """window_s every hop_s in each segment, the last one flush with its end (every sample covered); a segment
        shorter than a window is one window."""
        size, hop = round(self.cfg.window_s * SPEECH_RATE), round(self.cfg.hop_s * SPEECH_RATE)
        out = []
        for k, seg in enumerate(segments):
            begin, end = round(seg.start_s * SPEECH_RATE), round(seg.end_s * SPEECH_RATE)
            if end - begin <= size:
                out.append(Window(begin, end, k))
                continue
            starts = list(range(begin, end - size, hop)) + [end - size]
            out.extend(Window(s, s + size, k) for s in starts)
        return out

    def embed(self, audio: np.ndarray, windows: list[Window]) -> np.ndarray:
        """[len(windows), 256]. Windows are gathered a batch at a time (memory bounded by the batch) and brought up
        to TARGET_DBFS each: the encoder's power-mel input is not gain-invariant."""
        out = np.empty((len(windows), 256), np.float32)
        batch = self.encoder.batch_size
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            by_length.setdefault(w.end - w.start, []).append(i)
        for indices in by_length.values():
            for begin in range(0, len(indices), batch):
                chunk = indices[begin : begin + batch]
                stack = np.stack([audio[windows[i].start : windows[i].end] for i in chunk])
                out[chunk] = self.encoder.embed(_normalise(stack))
                heartbeat()
        return out

    def cluster(self, embeddings: np.ndarray, windows: list[Window]) -> np.ndarray:
        """A cluster index per window, 0, 1, ...

        Windows of the full window_s are clustered: average linkage on cosine distance (1 - similarity), cut at
        1 - threshold, or at max_speakers clusters if that cut leaves more. Shorter windows (segments shorter than
        a window) embed less reliably, so they, and past MAX_CLUSTERED windows the full ones between an evenly
        spread subset, join the most similar cluster centroid instead. Then clusters whose windows cover less
        than min_cluster_s of speech join their most similar larger cluster: a stretch that embeds oddly (a
        laugh, a cough, noise) is likelier than a speaker who says one word."""
        n = embeddings.shape[0]
        size = round(self.cfg.window_s * SPEECH_RATE)
        full = np.flatnonzero([w.end - w.start >= size for w in windows])
        if full.size < 2:
            full = np.arange(n)  # nothing but short speech: cluster what there is
        if n < 2:
            return np.zeros(n, int)
        chosen = full[np.linspace(0, full.size - 1, min(full.size, MAX_CLUSTERED)).round().astype(int)]
        tree = linkage(embeddings[chosen].astype(np.float64), method="average", metric="cosine")
        cut = fcluster(tree, t=1.0 - self.cfg.threshold, criterion="distance")
        if self.cfg.max_speakers and cut.max() > self.cfg.max_speakers:
            cut = fcluster(tree, t=self.cfg.max_speakers, criterion="maxclust")
        labels = np.argmax(embeddings @ _centroids(embeddings[chosen], cut - 1).T, axis=1)
        labels[chosen] = cut - 1
        labels = np.unique(labels, return_inverse=True)[1]
        members: list[list[Window]] = [[] for _ in range(labels.max() + 1)]
        for window, k in zip(windows, labels):
            members[k].append(window)
        covered = np.array([_covered_s(m) for m in members])
        large = np.flatnonzero(covered >= self.cfg.min_cluster_s)
        if 0 < large.size < covered.size:
            nearest = large[np.argmax(embeddings @ _centroids(embeddings, labels)[large].T, axis=1)]
            labels = np.where(np.isin(labels, large), labels, nearest)
        return np.unique(labels, return_inverse=True)[1]

    def turns(self, segments: list[Segment], windows: list[Window], labels: np.ndarray) -> list[Turn]:
        """Each RESOLUTION_S of a segment takes the label of the nearest window centre in that segment; runs of
        one label are turns; a run shorter than min_turn_s goes to the longer of its neighbours in the segment."""
        centres = np.array([w.centre_s for w in windows])
        of_segment = np.array([w.segment for w in windows])
        turns = []
        for k, seg in enumerate(segments):
            mine = np.flatnonzero(of_segment == k)
            steps = max(1, round(seg.duration_s / RESOLUTION_S))
            times = seg.start_s + (np.arange(steps) + 0.5) * seg.duration_s / steps
            nearest = mine[_nearest(centres[mine], times)]
            cuts = np.flatnonzero(np.diff(labels[nearest])) + 1
            bounds = [seg.start_s, *(seg.start_s + cuts * seg.duration_s / steps), seg.end_s]
            runs = [[bounds[i], bounds[i + 1], int(labels[nearest[0 if i == 0 else cuts[i - 1]]])]
                    for i in range(len(bounds) - 1)]  # fmt: skip
            for begin, end, label in _absorb_short(runs, self.cfg.min_turn_s):
                turns.append(Turn(round(float(begin), 3), round(float(end), 3), f"c{label}"))
        return relabel(turns)


def _absorb_short(runs: list[list], min_turn_s: float) -> list[list]:
    """Shortest first, a run under min_turn_s takes its longer neighbour's label and merges with it."""
    while len(runs) > 1:
        k = min(range(len(runs)), key=lambda i: runs[i][1] - runs[i][0])
        if runs[k][1] - runs[k][0] >= min_turn_s:
            break
        neighbours = [j for j in (k - 1, k + 1) if 0 <= j < len(runs)]
        j = max(neighbours, key=lambda i: runs[i][1] - runs[i][0])
        lo, hi = min(j, k), max(j, k)
        runs[lo : hi + 1] = [[runs[lo][0], runs[hi][1], runs[j][2]]]
        merged = []
        for run in runs:  # neighbours that now share a label become one run
            if merged and merged[-1][2] == run[2]:
                merged[-1][1] = run[1]
            else:
                merged.append(run)
        runs = merged
    return runs


def _centroids(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unit-length mean embedding of each label 0 .. labels.max() (every label present)."""
    sums = np.stack([embeddings[labels == k].sum(0) for k in range(labels.max() + 1)])
    return sums / np.linalg.norm(sums, axis=1, keepdims=True)


def _covered_s(windows: list[Window]) -> float:
    """Seconds of audio inside the union of the windows."""
    total, reach = 0, -1
    for w in sorted(windows, key=lambda w: w.start):
        total += max(0, w.end - max(w.start, reach))
        reach = max(reach, w.end)
    return total / SPEECH_RATE


def _normalise(windows: np.ndarray) -> np.ndarray:
    """Each window scaled up to TARGET_DBFS RMS (never down), as resemblyzer prepares utterances."""
    rms = np.sqrt(np.mean(windows.astype(np.float64) ** 2, axis=1, keepdims=True))
    gain = np.maximum(1.0, 10 ** (TARGET_DBFS / 20) / np.maximum(rms, 1e-9))
    return (windows * gain).astype(np.float32)


def _nearest(sorted_centres: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the centre nearest each time (the earlier one on a tie); memory linear in the segment's length."""
    right = np.clip(np.searchsorted(sorted_centres, times), 0, sorted_centres.size - 1)
    left = np.maximum(right - 1, 0)
    closer_left = np.abs(times - sorted_centres[left]) <= np.abs(sorted_centres[right] - times)
    return np.where(closer_left, left, right)
