"""The learned stages' model-free parts: frame sampling, waiting rules, zero-shot and correspondence scores."""

from __future__ import annotations

import av
import numpy as np
import pytest

from avcurate.config import Config, CorrespondenceConfig, ZeroShotRule
from avcurate.filters import split_rules
from avcurate.inputs import FrameSampler, InputSpec, clip_audio, load_inputs, save_inputs
from avcurate.learned import LearnedFinish, LearnedPlan, mark_duplicate, mean_embedding
from avcurate.model import AUDIO, KEPT, REJECTED, VISUAL, Clip, ModelInputs
from avcurate.scorers.learned import CorrespondenceScorer, TextBank, ZeroShotScorer, vocabulary_prompts


def _frame(value: int) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(np.full((16, 16, 3), value % 256, np.uint8), format="rgb24")


def test_frame_sampler_keeps_evenly_spaced_frames_in_bounded_memory() -> None:
    prepared: list[int] = []

    def prep(rgb: np.ndarray) -> np.ndarray:
        prepared.append(int(rgb[0, 0, 0]))
        return rgb[:4, :4]

    sampler = FrameSampler(8, prep)
    most_held = 0
    for position in range(250):
        sampler.add(position, _frame(position))
        most_held = max(most_held, len(sampler.frames))
    frames, times = sampler.pick(250, 25.0)
    assert most_held < 16  # never more than 2n frames at model size, however long the clip
    assert len(prepared) <= 48  # only frames it may keep are converted and resized (of 250)
    assert frames.shape == (8, 4, 4, 3)
    positions = times * 25.0
    # Each pick is within a stride of the centre of its eighth of the clip.
    centres = (np.arange(8) + 0.5) * 250 / 8
    assert np.all(np.abs(positions - centres) <= 16), positions
    assert list(frames[:, 0, 0, 0]) == [int(p) % 256 for p in positions]


def test_frame_sampler_short_clip_gives_every_frame_it_has() -> None:
    sampler = FrameSampler(8, lambda rgb: rgb)
    for position in range(5):
        sampler.add(position, _frame(position))
    frames, times = sampler.pick(5, 25.0)
    assert list(frames[:, 0, 0, 0]) == [0, 1, 2, 3, 4]
    assert np.allclose(times, np.arange(5) / 25.0)


def test_clip_audio_takes_the_middle_mono_at_the_model_rate() -> None:
    rate = 16000
    t = np.arange(20 * rate) / rate
    left = np.where(t < 10, 0.5, -0.5).astype(np.float32)  # the middle 10 s hold both halves equally
    stereo = np.stack([left, left])
    audio = clip_audio(stereo, rate, InputSpec(audio_rate=48000, audio_max_s=10.0))
    assert audio.shape == (480000,)
    assert abs(float(audio[:230000].mean()) - 0.5) < 1e-3 and abs(float(audio[250000:].mean()) + 0.5) < 1e-3


def test_inputs_round_trip_without_pickle(tmp_path) -> None:
    inputs = ModelInputs(np.zeros((3, 8, 8, 3), np.uint8), np.arange(3) / 25.0, np.ones(100, np.float32))
    save_inputs(str(tmp_path), "abc-00001", inputs)
    back = load_inputs(str(tmp_path), "abc-00001")
    assert back.frames.shape == (3, 8, 8, 3) and back.audio.dtype == np.float32
    assert np.array_equal(back.frame_times_s, inputs.frame_times_s)
    assert load_inputs(str(tmp_path), "other-00001").frames is None


def test_rules_on_learned_scores_wait_for_inference() -> None:
    cfg = Config.from_dict(
        {
            "models": {"visual": {"name": "local-dir:/x"}, "audio": {"name": "/y"}},
            "zero_shot": [{"name": "slides", "model": "visual", "prompts": ["a slide"], "max": 0.5}],
            "filters": [
                {"score": "silence_ratio", "max": 0.8},
                {"score": "av_correspondence", "min": 0.2},
                {"score": "silence_ratio", "max": 0.5, "when": "slides >= 0.1", "name": "quiet_slides"},
            ],
        }
    )
    now, later = split_rules(cfg.filters, cfg.learned_scores)
    assert [r.score for r in now] == ["silence_ratio"] and len(later) == 2


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def _bank(prompts: tuple[str, ...], seed: int) -> TextBank:
    rng = np.random.default_rng(seed)
    return TextBank(prompts, np.stack([_unit(rng.normal(size=32)) for _ in prompts]), 100.0)


def _clip(**embeddings: np.ndarray) -> Clip:
    return Clip("s", "s.mp4", 0, 0.0, 2.0, 50, 25.0, 64, 64, 16000, 1, 64, 64, embeddings=dict(embeddings))


def test_zero_shot_rule_scores_and_rejects_with_its_score() -> None:
    correspondence = CorrespondenceConfig(vocabulary=("people", "a dog"))
    rule = ZeroShotRule("slides", VISUAL, ("a presentation slide",), max=0.5)
    prompts = ("a presentation slide", *vocabulary_prompts(VISUAL, correspondence))
    bank = _bank(prompts, 0)
    scorer = ZeroShotScorer(rule, bank, correspondence)
    assert scorer.prompts == prompts  # an empty contrast falls back on the shared vocabulary
    slide, dog = _clip(visual=bank.embeddings[0]), _clip(visual=bank.embeddings[2])
    assert scorer.score(slide)["slides"] > 0.99 and scorer.score(dog)["slides"] < 0.01

    cfg = Config(zero_shot=(rule,), correspondence=correspondence, filters=())
    finish = LearnedFinish(cfg, LearnedPlan(InputSpec(), banks={VISUAL: bank}))
    judged = finish(slide)
    assert judged.status == REJECTED and judged.reasons[0].startswith("slides: 1 > max 0.5")
    assert judged.zero_shot["slides"] > 0.99 and slide.status == KEPT  # the input clip is not changed
    assert finish(dog).status == KEPT


def test_correspondence_separates_matching_from_swapped_sources() -> None:
    cfg = CorrespondenceConfig(vocabulary=("a dog", "an engine", "music", "people talking"))
    visual = _bank(vocabulary_prompts(VISUAL, cfg), 1)
    audio = _bank(vocabulary_prompts(AUDIO, cfg), 2)
    scorer = CorrespondenceScorer(visual, audio, cfg)
    rng = np.random.default_rng(3)
    own, swapped = [], []
    for source in range(4):
        picture = _unit(visual.embeddings[source] + 0.05 * rng.normal(size=32))
        sound = _unit(audio.embeddings[source] + 0.05 * rng.normal(size=32))
        other = _unit(audio.embeddings[(source + 1) % 4] + 0.05 * rng.normal(size=32))
        own.append(scorer.score(_clip(visual=picture, audio=sound))["av_correspondence"])
        swapped.append(scorer.score(_clip(visual=picture, audio=other))["av_correspondence"])
    assert min(own) > 0.9 and max(swapped) < 0.1


def test_mean_embedding_is_unit_length_and_duplicates_name_the_kept_clip() -> None:
    rows = np.stack([_unit(np.ones(8)), _unit(np.arange(8.0) + 1)])
    mean = mean_embedding(rows)
    assert mean.dtype == np.float32 and abs(float(np.linalg.norm(mean)) - 1) < 1e-6
    marked = mark_duplicate(_clip(), "aaaa-00000", 0.98765, 0.95)
    assert marked.status == REJECTED and marked.duplicate_of == "aaaa-00000"
    assert marked.reasons == ["near_duplicate: 0.9877 >= 0.95 with aaaa-00000"]
    assert marked.scores.duplicate_similarity == pytest.approx(0.98765)


def test_a_rule_without_its_model_is_a_config_error() -> None:
    from avcurate.config import ConfigError

    with pytest.raises(ConfigError, match="needs models.audio.name"):
        Config.from_dict({"zero_shot": [{"name": "music", "model": "audio", "prompts": ["music"], "max": 0.5}]})
    with pytest.raises(ConfigError, match="models.visual.name is not set"):
        Config.from_dict({"dedup": {"embedding": "visual"}})
    with pytest.raises(ConfigError, match="av_correspondence needs both"):
        Config.from_dict({"models": {"visual": {"name": "x"}}, "filters": [{"score": "av_correspondence", "min": 0.1}]})


def test_the_example_learned_config_loads_with_every_rule() -> None:
    from pathlib import Path

    cfg = Config.load(Path(__file__).parent.parent / "pipelines" / "configs" / "learned.yaml")
    assert cfg.models.visual.name == "ViT-B-32" and cfg.models.audio.name == "laion/clap-htsat-unfused"
    assert {r.name for r in cfg.zero_shot} == {"slides", "screen_recording", "music_only", "noise", "silent"}
    assert cfg.dedup.embedding == "visual" and cfg.learned_scores >= {"slides", "av_correspondence"}
