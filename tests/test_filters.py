"""Declarative filters: every failed rule is a reason; conditions; source-level sync correction; config."""

from __future__ import annotations

from pathlib import Path

import pytest

from avcurate.config import Config, ConfigError, FilterRule, SyncCorrectionConfig
from avcurate.filters import apply_filters, reason_name, source_sync_correction
from avcurate.model import KEPT, REJECTED, Clip, ClipScores


def clip(**scores: float | None) -> Clip:
    return Clip(source_id="0" * 16, source_uri="/x.mp4", clip_index=0, start_s=0.0, end_s=4.0, n_frames=100,
                fps=25.0, width=342, height=256, source_width=684, source_height=512, sample_rate=16000,
                channels=1, scores=ClipScores(**scores))


RULES = (
    FilterRule("silence_ratio", max=0.8),
    FilterRule("motion_score", min=0.002),
    FilterRule("abs_av_offset_ms", max=200.0, when="sync_confidence >= 0.4"),
)


def test_every_failed_rule_is_recorded() -> None:
    c = clip(silence_ratio=0.95, motion_score=0.0001, av_offset_ms=-350.0, sync_confidence=0.9)
    apply_filters(c, RULES)
    assert c.status == REJECTED
    assert [reason_name(r) for r in c.reasons] == ["silence_ratio", "motion_score", "abs_av_offset_ms"]
    assert "0.95 > max 0.8" in c.reasons[0]


def test_a_clip_passing_every_rule_is_kept() -> None:
    c = clip(silence_ratio=0.1, motion_score=0.01, av_offset_ms=40.0, sync_confidence=0.9)
    apply_filters(c, RULES)
    assert (c.status, c.reasons) == (KEPT, [])


def test_condition_limits_a_rule_to_confident_measurements() -> None:
    unsure = clip(silence_ratio=0.1, motion_score=0.01, av_offset_ms=-450.0, sync_confidence=0.1)
    apply_filters(unsure, RULES)
    assert unsure.status == KEPT


def test_unmeasured_score_fails_its_rule() -> None:
    c = clip(motion_score=0.01)
    apply_filters(c, (FilterRule("silence_ratio", max=0.8),))
    assert c.reasons == ["silence_ratio: not measured"]


def test_residual_offset_after_correction_is_what_is_filtered() -> None:
    c = clip(silence_ratio=0.1, motion_score=0.01, av_offset_ms=180.0, sync_confidence=0.9)
    c.sync_correction_ms = 120.0
    apply_filters(c, (FilterRule("abs_av_offset_ms", max=100.0),))
    assert c.status == KEPT


def test_source_correction_is_a_confident_weighted_median_within_bounds() -> None:
    cfg = SyncCorrectionConfig(enabled=True, max_abs_offset_ms=200.0, min_confidence=0.5)
    clips = [clip(av_offset_ms=o, sync_confidence=c) for o, c in [(120, 0.9), (118, 0.8), (-400, 0.2), (124, 0.7)]]
    assert source_sync_correction(clips, cfg) == 120.0
    assert source_sync_correction([clip(av_offset_ms=350, sync_confidence=0.9)], cfg) == 0.0  # too large to trust
    assert source_sync_correction([clip(av_offset_ms=8, sync_confidence=0.9)], cfg) == 0.0  # measurement noise
    assert source_sync_correction(clips, SyncCorrectionConfig(enabled=False)) == 0.0


def test_unknown_score_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown score 'loudnes'"):
        apply_filters(clip(), (FilterRule("loudnes", min=-30.0),))


def test_config_errors_name_the_cause() -> None:
    with pytest.raises(ConfigError, match="unknown key\\(s\\) \\['fsp'\\] in 'decode'"):
        Config.from_dict({"decode": {"fsp": 30}})
    with pytest.raises(ConfigError, match="needs a min or a max"):
        Config.from_dict({"filters": [{"score": "silence_ratio"}]})
    with pytest.raises(ConfigError, match="must look like"):
        Config.from_dict({"filters": [{"score": "silence_ratio", "max": 1, "when": "confidence is high"}]})


def test_config_hash_is_stable_and_sensitive() -> None:
    assert Config.from_dict({"decode": {"fps": 25}}).hash == Config().hash
    assert Config.from_dict({"decode": {"fps": 30}}).hash != Config().hash


def test_the_documented_default_config_is_the_default() -> None:
    """pipelines/configs/default.yaml lists every key with its default: it must not drift from the code."""
    documented = Config.load(Path(__file__).parent.parent / "pipelines" / "configs" / "default.yaml")
    assert documented == Config() and documented.hash == Config().hash
