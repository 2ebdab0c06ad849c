"""Pipeline configuration: typed sections loaded from YAML, with a stable hash recorded in every clip."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


_HASHED = "hashed"  # a Config field's metadata: False keeps it out of Config.hash


@dataclass(frozen=True)
class DecodeConfig:
    fps: float = 25.0
    short_side: int = 256  # resize so the shorter side is this many pixels (even sizes, aspect kept)
    upscale: bool = False  # enlarge smaller sources to short_side; if false they keep their own size
    sample_rate: int = 16000
    channels: int = 1
    probe_timeout_s: float = 30.0
    # Decoding a source is stopped when it makes no progress (no frame decoded, no clip staged) for
    # stall_timeout_s; when it has run longer than timeout_s plus timeout_per_media_s per second of media decoded
    # so far (measured, not what the header claims); and, whatever its progress, after max_timeout_s.
    stall_timeout_s: float = 60.0
    timeout_s: float = 60.0
    timeout_per_media_s: float = 3.0
    max_timeout_s: float = 7200.0
    memory_limit_mb: int = 3072  # cap on what the sandboxed decoder process allocates (RLIMIT_DATA)
    threads: int = 1  # decoder and encoder threads per worker; parallelism comes from workers
    # Sources longer than 1.5x this are split into spans of about this length that different workers decode
    # (avcurate/spans.py), so one long source does not keep one worker busy for hours. 0 (the default): never
    # split, since a split changes the clips at span boundaries (docs/distributed.md, Long sources).
    span_s: float = 0.0


@dataclass(frozen=True)
class ClipConfig:
    min_s: float = 2.0
    max_s: float = 10.0


SHOT_DETECTORS = ("luma", "adaptive", "content", "histogram", "transnetv2")


@dataclass(frozen=True)
class ShotConfig:
    """Which shot detector cuts the clips (`avcurate/shots/`), and its settings."""

    # luma (PySceneDetect's adaptive rule on the decoder's luma, vectorised), PySceneDetect's own adaptive |
    # content | histogram, or transnetv2 (learned). Measured on real footage in docs/benchmarks.md.
    detector: str = "luma"
    threshold: float | None = None  # on the detector's own score; None: its default (luma 3, as adaptive)
    min_shot_s: float = 0.2  # luma and PySceneDetect: a cut closer than this to the previous one is ignored
    # PySceneDetect adaptive/content: score luma change alone. Their default averages hue, saturation and luma
    # change, so a cut between black-and-white shots scores a third of the same change in colour.
    luma_only: bool = True
    dissolves: bool = True  # luma and PySceneDetect: also find dissolves and fades (avcurate/shots/dissolve.py)
    min_transition_frames: int = 3  # TransNetV2: a boundary this many frames long is a gradual transition
    weights: str | None = None  # TransNetV2: a state dict to load; None: the weights the package ships
    device: str = "auto"  # TransNetV2: cuda when there is one, else cpu
    batch_windows: int = 4  # TransNetV2: 100-frame windows per forward pass (look-ahead: 75 + 50 per extra one)


@dataclass(frozen=True)
class EncodeConfig:
    crf: int = 23
    preset: str = "veryfast"
    audio_bitrate: int = 64000


@dataclass(frozen=True)
class ScoringConfig:
    silence_dbfs: float = -55.0  # a 20 ms window quieter than this is silent
    clipping_level: float = 0.999
    static_threshold: float = 0.004  # mean abs luma change (0..1) under which a frame counts as static
    black_luma: float = 0.07  # mean luma (0..1) under which a frame counts as black
    sync_max_offset_ms: float = 500.0  # the sync scorer searches offsets in [-this, +this]
    sharpness_fps: float = 2.0  # full-size frames per second the sharpness score looks at


@dataclass(frozen=True)
class FilterRule:
    """Keep a clip only if `score` lies in [min, max]. A clip missing the score fails the rule.

    `when` ("sync_confidence >= 0.4") applies the rule only to clips meeting that condition: an offset
    measured without confidence says nothing about the clip.
    """

    score: str
    min: float | None = None
    max: float | None = None
    name: str | None = None
    when: str | None = None

    @property
    def reason_name(self) -> str:
        return self.name or self.score


@dataclass(frozen=True)
class SyncCorrectionConfig:
    """Shift a source's audio to undo a small, confident offset instead of rejecting its clips."""

    enabled: bool = False
    min_abs_offset_ms: float = 20.0  # below this (half a frame at 25 fps) the offset is measurement noise
    max_abs_offset_ms: float = 200.0
    min_confidence: float = 0.5


@dataclass(frozen=True)
class OutputConfig:
    shard_prefix: str = "clips"
    shard_max_clips: int = 1000
    shard_max_bytes: int = 1 << 30
    # Shards and the index are planned and sorted a key range of about this many clips per worker (~200 bytes a
    # clip for planning, ~400 for the index): a run of up to this many is planned as one, at any size no worker
    # holds the whole run.
    plan_bucket_clips: int = 2_000_000


@dataclass(frozen=True)
class VisualModelConfig:
    """An OpenCLIP image model, named as OpenCLIP users name one (avcurate/models/openclip.py)."""

    # An architecture ("ViT-B-32") with `pretrained`, "hf-hub:org/repo", or "local-dir:/path" (a folder holding
    # open_clip_config.json and the weights). None: no visual model.
    name: str | None = None
    pretrained: str | None = None  # a tag ("laion2b_s34b_b79k") or a local checkpoint file, for an architecture
    frames_per_clip: int = 8  # evenly spaced over the clip
    per_frame: bool = False  # also keep every frame's embedding (VISUAL_FRAMES), not only their mean
    batch_size: int = 256  # images per forward pass


@dataclass(frozen=True)
class AudioModelConfig:
    """A CLAP model through transformers (avcurate/models/clap.py): a hub name or a local folder."""

    name: str | None = None  # "laion/clap-htsat-unfused", or a folder saved with save_pretrained. None: none
    max_s: float = 10.0  # audio per clip the model hears (CLAP's own window is 10 s)
    batch_size: int = 64  # clips per forward pass


@dataclass(frozen=True)
class ModelsConfig:
    """Learned models, run in Beam's RunInference after decoding (avcurate/beam/inference.py)."""

    device: str = "auto"  # "auto" (cuda when there is one), "cpu", "cuda", "cuda:1"
    precision: str = "amp"  # amp: bfloat16 autocast on cuda (fp32 on cpu); fp32: full precision everywhere
    max_batch_clips: int = 64  # clips RunInference gathers into one batch (across sources)
    gpu_memory_fraction: float = 0.9  # cap on the CUDA caching allocator of each worker process
    visual: VisualModelConfig = field(default_factory=VisualModelConfig)
    audio: AudioModelConfig = field(default_factory=AudioModelConfig)

    @property
    def enabled(self) -> bool:
        return self.visual.name is not None or self.audio.name is not None


@dataclass(frozen=True)
class ZeroShotRule:
    """A text rule: the probability, among `prompts` + `contrast`, that a clip shows (or sounds like) `prompts`.

    The probability is the clip's score `name`; a clip outside [min, max] is rejected with that score.
    """

    name: str
    model: str  # "visual" (OpenCLIP, on the clip's mean frame embedding) or "audio" (CLAP)
    prompts: tuple[str, ...]
    contrast: tuple[str, ...] = ()  # what else a clip may be; empty: the model's general vocabulary
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class CorrespondenceConfig:
    """AV correspondence: the agreement of the two models' zero-shot distributions over one vocabulary."""

    vocabulary: tuple[str, ...] = (
        "people talking", "a man speaking", "a woman speaking", "a crowd", "children playing", "singing",
        "music", "a guitar", "a piano", "drums", "an orchestra", "applause", "laughter", "a dog", "a cat", "birds",
        "a horse", "an engine", "a car", "a motorcycle", "a train", "an airplane", "a helicopter", "traffic",
        "a siren", "rain", "wind", "the sea", "a waterfall", "fire", "typing on a keyboard", "tools and machinery",
        "cooking", "footsteps", "a video game", "silence",
    )
    visual_template: str = "a photo of {}."
    audio_template: str = "the sound of {}."


@dataclass(frozen=True)
class DedupConfig:
    """Near-duplicates across the whole run (avcurate/dedup.py): k-means buckets, exact pairs inside each."""

    embedding: str | None = None  # "visual" or "audio"; None: no near-duplicate search
    threshold: float = 0.95  # cosine similarity at or above which a clip is a near-copy of another
    clusters: int = 0  # k-means buckets; 0: one per 1000 clips
    probes: int = 2  # buckets each clip is compared in (its nearest centroids)
    sample_size: int = 100_000  # embeddings k-means is trained on
    iterations: int = 20
    seed: int = 0


@dataclass(frozen=True)
class VadConfig:
    """Silero VAD (avcurate/speakers/vad.py): hysteresis on its per-32 ms speech probability."""

    threshold: float = 0.5  # speech starts where the probability reaches this...
    neg_threshold: float = 0.35  # ...and ends where it falls below this
    min_speech_s: float = 0.25  # shorter bursts are dropped
    min_silence_s: float = 0.1  # shorter pauses do not split a segment
    pad_s: float = 0.03  # added to each side of a segment


DIARIZATION_BACKENDS = ("offline", "pyannote")


@dataclass(frozen=True)
class DiarizationConfig:
    """Speaker turns over each whole source (avcurate/speakers/diarize.py), mapped onto its clips."""

    backend: str | None = "offline"  # offline (ships its weights) | pyannote | None (voice activity only)
    # offline: speaker embeddings of windows inside speech, clustered; merging stops when the closest two
    # clusters are less similar (cosine) than `threshold`. window_s and threshold move together: 2.5 s / 0.74
    # is where pyannote's sample and the espeak tests agree (docs/benchmarks.md).
    window_s: float = 2.5
    hop_s: float = 0.75
    threshold: float = 0.74
    min_turn_s: float = 0.5  # turns shorter than this go to the speaker around them
    min_cluster_s: float = 2.0  # clusters covering less speech than this join their most similar larger one
    max_speakers: int | None = None  # clustering never stops above this many speakers
    # pyannote: a hub pipeline name (HF_TOKEN from the environment) or a local pipeline folder
    pipeline: str = "pyannote/speaker-diarization-community-1"
    device: str = "auto"


FACE_DETECTORS = ("mtcnn", "haar")
LIP_SYNC_BACKENDS = ("mouth_motion", "syncnet")


@dataclass(frozen=True)
class FacesConfig:
    """Faces in each clip, tracked, and which one is speaking (avcurate/speakers/faces.py, lipsync.py)."""

    detector: str | None = "mtcnn"  # mtcnn (facenet-pytorch) | haar (OpenCV) | None: no faces
    detect_fps: float = 5.0  # detections per second; boxes are interpolated between them
    min_face_px: int = 32  # smallest face side in decoded pixels (MTCNN costs 2.5x as much at 20: more scales)
    min_score: float = 0.9  # MTCNN's confidence below which a face is ignored (Haar accepts on 5 neighbouring hits)
    min_track_s: float = 0.5  # shorter tracks are dropped (a face must stay this long to be scored)
    lip_sync: str = "mouth_motion"  # mouth_motion (model-free) | syncnet (learned, `syncnet_weights`)
    syncnet_weights: str | None = None  # local SyncNet weights file for lip_sync: syncnet
    device: str = "auto"  # where SyncNet runs: cuda when there is one (about 3 s per second of video on a CPU core)
    max_lip_offset_ms: float = 400.0  # lip offsets searched in [-this, +this]
    speaking_threshold: float | None = None  # a track speaks when its sync score reaches this; None: backend's


@dataclass(frozen=True)
class SpeakersConfig:
    """Voice activity, diarization, faces and lip sync (avcurate/speakers/). Off by default: it costs CPU."""

    enabled: bool = False
    vad: VadConfig = field(default_factory=VadConfig)
    diarization: DiarizationConfig = field(default_factory=DiarizationConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)


@dataclass(frozen=True)
class BlockListConfig:
    """A block list (opt-outs, takedowns): the sources it names are never curated (avcurate/blocklist.py).

    `entries` inline and/or a `file` of one entry per line; an entry is a URI, a source id or sha256:<hex>."""

    name: str
    entries: tuple[str, ...] = ()
    file: str | None = None


DEFAULT_FILTERS = (
    FilterRule("source_short_side", min=256.0),  # never pass off a smaller source as full size
    FilterRule("silence_ratio", max=0.8),
    FilterRule("clipping_ratio", max=0.01),
    FilterRule("motion_score", min=0.002),
    FilterRule("black_ratio", max=0.5),
    FilterRule("sharpness", min=25.0),  # real sharp footage measured 40-290, blurred copies 5-48 (docs/benchmarks.md)
    FilterRule("abs_av_offset_ms", max=200.0, when="sync_confidence >= 0.4"),
)


@dataclass(frozen=True)
class Config:
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)
    shots: ShotConfig = field(default_factory=ShotConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    filters: tuple[FilterRule, ...] = DEFAULT_FILTERS
    sync_correction: SyncCorrectionConfig = field(default_factory=SyncCorrectionConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    zero_shot: tuple[ZeroShotRule, ...] = ()
    correspondence: CorrespondenceConfig = field(default_factory=CorrespondenceConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    speakers: SpeakersConfig = field(default_factory=SpeakersConfig)
    # Which sources are curated, not how: outside the hash, so a dataset's block lists can grow between its
    # incremental runs while every clip keeps the config_hash it was made with.
    blocklists: tuple[BlockListConfig, ...] = field(default=(), metadata={_HASHED: False})

    @property
    def learned_scores(self) -> frozenset[str]:
        """Scores made after inference: filters naming them run there, not in the decoder."""
        return frozenset({"av_correspondence", "duplicate_similarity", *(rule.name for rule in self.zero_shot)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def hash(self) -> str:
        """Stable across runs and machines: recorded in every clip so outputs name the config that made them."""
        unhashed = {f.name for f in dataclasses.fields(self) if f.metadata.get(_HASHED) is False}
        hashed = {name: value for name, value in self.to_dict().items() if name not in unhashed}
        canonical = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Config":
        data = dict(data or {})
        sections = {
            "decode": DecodeConfig,
            "clips": ClipConfig,
            "shots": ShotConfig,
            "encode": EncodeConfig,
            "scoring": ScoringConfig,
            "sync_correction": SyncCorrectionConfig,
            "output": OutputConfig,
            "correspondence": CorrespondenceConfig,
            "dedup": DedupConfig,
        }
        nested = {"filters", "models", "zero_shot", "speakers", "blocklists"}
        unknown = set(data) - set(sections) - nested
        if unknown:
            known = sorted([*sections, *nested])
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; known: {known}")
        kwargs: dict[str, Any] = {}
        for name, section_cls in sections.items():
            if name in data:
                kwargs[name] = _build(section_cls, data[name] or {}, name)
        if "filters" in data:
            rules = data["filters"] or []
            if not isinstance(rules, list):
                raise ConfigError("'filters' must be a list of rules like {score: silence_ratio, max: 0.9}")
            kwargs["filters"] = tuple(_build(FilterRule, r, f"filters[{i}]") for i, r in enumerate(rules))
            for rule in kwargs["filters"]:
                if rule.min is None and rule.max is None:
                    raise ConfigError(f"filter on '{rule.score}' needs a min or a max")
                if rule.when is not None:
                    from .filters import parse_condition

                    try:
                        parse_condition(rule.when)
                    except ValueError as e:
                        raise ConfigError(str(e)) from None
        if "models" in data:
            kwargs["models"] = _models(data["models"] or {})
        if "speakers" in data:
            kwargs["speakers"] = _speakers(data["speakers"] or {})
        if "zero_shot" in data:
            rules = data["zero_shot"] or []
            if not isinstance(rules, list):
                raise ConfigError("'zero_shot' must be a list of rules like {name: slides, model: visual, prompts: [...], max: 0.5}")
            kwargs["zero_shot"] = tuple(_build(ZeroShotRule, r, f"zero_shot[{i}]") for i, r in enumerate(rules))
        if "blocklists" in data:
            kwargs["blocklists"] = _blocklists(data["blocklists"])
        _check_learned(kwargs)
        shots = kwargs.get("shots", ShotConfig())
        if shots.detector not in SHOT_DETECTORS:
            raise ConfigError(f"unknown shots.detector {shots.detector!r}; choose one of {list(SHOT_DETECTORS)}")
        if shots.batch_windows < 1:
            raise ConfigError("shots.batch_windows must be at least 1")
        if kwargs.get("output", OutputConfig()).plan_bucket_clips < 1:
            raise ConfigError("output.plan_bucket_clips must be at least 1")
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path | None) -> "Config":
        if path is None:
            return cls()
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(yaml.safe_load(f))


def _build_nested(section_cls: type, values: Any, where: str, nested: dict[str, type]) -> Any:
    """A section whose keys in `nested` are sub-sections of their own (models.visual, speakers.faces, ...)."""
    if not isinstance(values, dict):
        raise ConfigError(f"config '{where}' must be a mapping, got {type(values).__name__}")
    flat = _build(section_cls, {k: v for k, v in values.items() if k not in nested}, where)
    parts = {k: _build(cls, values[k] or {}, f"{where}.{k}") for k, cls in nested.items() if k in values}
    return dataclasses.replace(flat, **parts)


def _models(values: Any) -> ModelsConfig:
    models = _build_nested(ModelsConfig, values, "models", {"visual": VisualModelConfig, "audio": AudioModelConfig})
    if models.precision not in ("amp", "fp32"):
        raise ConfigError(f"models.precision must be 'amp' or 'fp32', got {models.precision!r}")
    if models.visual.frames_per_clip < 1 or models.max_batch_clips < 1:
        raise ConfigError("models.visual.frames_per_clip and models.max_batch_clips must be at least 1")
    return models


def _speakers(values: Any) -> SpeakersConfig:
    nested = {"vad": VadConfig, "diarization": DiarizationConfig, "faces": FacesConfig}
    speakers = _build_nested(SpeakersConfig, values, "speakers", nested)
    backend, faces = speakers.diarization.backend, speakers.faces
    if backend is not None and backend not in DIARIZATION_BACKENDS:
        raise ConfigError(f"speakers.diarization.backend must be one of {list(DIARIZATION_BACKENDS)} or null, got {backend!r}")
    if faces.detector is not None and faces.detector not in FACE_DETECTORS:
        raise ConfigError(f"speakers.faces.detector must be one of {list(FACE_DETECTORS)} or null, got {faces.detector!r}")
    if faces.lip_sync not in LIP_SYNC_BACKENDS:
        raise ConfigError(f"speakers.faces.lip_sync must be one of {list(LIP_SYNC_BACKENDS)}, got {faces.lip_sync!r}")
    if faces.lip_sync == "syncnet" and not faces.syncnet_weights:
        raise ConfigError("speakers.faces.lip_sync: syncnet needs speakers.faces.syncnet_weights (a local weights file)")
    if faces.detect_fps <= 0 or speakers.diarization.window_s <= 0 or speakers.diarization.hop_s <= 0:
        raise ConfigError("speakers.faces.detect_fps and speakers.diarization.window_s / hop_s must be positive")
    return speakers


def _blocklists(values: Any) -> tuple[BlockListConfig, ...]:
    """The lists as given, each inline entry checked; a list's file is read when the run loads its lists
    (`avcurate.blocklist.load`), once, however long it is."""
    if not isinstance(values, list):
        raise ConfigError("'blocklists' must be a list like [{name: takedowns, file: takedowns.txt}]")
    lists = tuple(_blocklist(item, f"blocklists[{i}]") for i, item in enumerate(values))
    names = [blocklist.name for blocklist in lists]
    if len(set(names)) < len(names):
        raise ConfigError(f"block list names must be unique, got {names}")
    return lists


def _blocklist(values: Any, where: str) -> BlockListConfig:
    from .blocklist import BlockListError, parse_entry

    if not isinstance(values, dict) or not isinstance(values.get("name"), str) or not values["name"].strip():
        raise ConfigError(f"{where} needs a name, as in {{name: takedowns, file: takedowns.txt}} (the ledger's "
                          "excluded_by names it)")  # fmt: skip
    blocklist = _build(BlockListConfig, values, where)
    if not isinstance(blocklist.entries, tuple) or not all(isinstance(e, str) for e in blocklist.entries):
        raise ConfigError(f"block list '{blocklist.name}': entries must be a list of strings")
    if not isinstance(blocklist.file, str | None):
        raise ConfigError(f"block list '{blocklist.name}': file must be a path")
    if not blocklist.entries and blocklist.file is None:
        raise ConfigError(f"block list '{blocklist.name}' needs entries, a file, or both")
    for n, entry in enumerate(blocklist.entries):
        try:
            parse_entry(entry)
        except BlockListError as e:
            raise ConfigError(f"block list '{blocklist.name}' (entries[{n}]): {e}") from None
    return blocklist


def _check_learned(kwargs: dict[str, Any]) -> None:
    """A learned score or rule whose model is not configured is an error, never a silently skipped stage."""
    models = kwargs.get("models", ModelsConfig())
    have = {"visual": models.visual.name is not None, "audio": models.audio.name is not None}
    for rule in kwargs.get("zero_shot", ()):
        if rule.model not in have:
            raise ConfigError(f"zero_shot rule '{rule.name}': model must be 'visual' or 'audio', got {rule.model!r}")
        if not have[rule.model]:
            raise ConfigError(f"zero_shot rule '{rule.name}' needs models.{rule.model}.name (no {rule.model} model configured)")
        if not rule.prompts:
            raise ConfigError(f"zero_shot rule '{rule.name}' needs prompts")
        if rule.min is None and rule.max is None:
            raise ConfigError(f"zero_shot rule '{rule.name}' needs a min or a max")
    dedup = kwargs.get("dedup", DedupConfig())
    if dedup.embedding is not None:
        if dedup.embedding not in have:
            raise ConfigError(f"dedup.embedding must be 'visual' or 'audio', got {dedup.embedding!r}")
        if not have[dedup.embedding]:
            raise ConfigError(f"dedup.embedding is {dedup.embedding!r} but models.{dedup.embedding}.name is not set")
    speakers = kwargs.get("speakers", SpeakersConfig())
    for rule in kwargs.get("filters", ()):
        for score in (rule.score, *([_condition_score(rule.when)] if rule.when else [])):
            _check_speaker_score(score, speakers)
        if rule.score == "av_correspondence" and not all(have.values()):
            raise ConfigError("a filter on av_correspondence needs both models.visual.name and models.audio.name")
        if rule.score == "duplicate_similarity" and dedup.embedding is None:
            raise ConfigError("a filter on duplicate_similarity needs dedup.embedding")


# Speaker scores, and what has to be configured for each to be measured.
_SPEECH_SCORES = {"speech_ratio"}
_DIARIZED_SCORES = {"num_speakers", "dominant_speaker_share", "overlap_ratio"}
_FACE_SCORES = {"num_faces", "speaker_visible_ratio", "lip_offset_ms", "abs_lip_offset_ms", "lip_sync_confidence"}


def _condition_score(condition: str) -> str:
    from .filters import parse_condition

    return parse_condition(condition)[0]


def _check_speaker_score(score: str, speakers: SpeakersConfig) -> None:
    if score not in _SPEECH_SCORES | _DIARIZED_SCORES | _FACE_SCORES:
        return
    if not speakers.enabled:
        raise ConfigError(f"a filter on {score} needs speakers.enabled: true")
    if score in _DIARIZED_SCORES and speakers.diarization.backend is None:
        raise ConfigError(f"a filter on {score} needs speakers.diarization.backend (offline or pyannote)")
    if score == "overlap_ratio" and speakers.diarization.backend != "pyannote":
        raise ConfigError("a filter on overlap_ratio needs speakers.diarization.backend: pyannote (the offline "
                          "backend gives each instant one speaker, so it cannot measure overlapped speech)")  # fmt: skip
    if score in _FACE_SCORES and speakers.faces.detector is None:
        raise ConfigError(f"a filter on {score} needs speakers.faces.detector (mtcnn or haar)")


def _build(section_cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config '{where}' must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(section_cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in '{where}'; known: {sorted(names)}")
    # 200 and 200.0 are the same setting: make them hash the same.
    floats = {f.name for f in dataclasses.fields(section_cls) if str(f.type).startswith("float")}
    values = {k: float(v) if k in floats and isinstance(v, int) and not isinstance(v, bool) else v for k, v in values.items()}
    # YAML lists become tuples: sections are frozen, hashable values.
    tuples = {f.name for f in dataclasses.fields(section_cls) if str(f.type).startswith("tuple")}
    values = {k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in values.items()}
    return section_cls(**values)
