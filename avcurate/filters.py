"""Declarative keep-or-drop rules over clip scores. Every failed rule is recorded as a reason."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .config import FilterRule, SyncCorrectionConfig
from .model import KEPT, REJECTED, Clip


def clip_values(clip: Clip) -> dict[str, Any]:
    """The values rules can name: every score, plus duration and the offset left after any sync correction."""
    values: dict[str, Any] = clip.scores.to_dict()
    values.update(clip.zero_shot)
    values["duration_s"] = clip.duration_s
    values["source_short_side"] = min(clip.source_width, clip.source_height)
    if clip.scores.av_offset_ms is not None:
        residual = clip.scores.av_offset_ms - clip.sync_correction_ms
        values["residual_av_offset_ms"] = residual
        values["abs_av_offset_ms"] = abs(residual)
    else:
        values["residual_av_offset_ms"] = values["abs_av_offset_ms"] = None
    lip = clip.scores.lip_offset_ms
    values["abs_lip_offset_ms"] = abs(lip - clip.sync_correction_ms) if lip is not None else None
    return values


_CONDITION = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(>=|<=|>|<)\s*(-?[0-9.]+(?:e-?[0-9]+)?)\s*$")
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def parse_condition(text: str) -> tuple[str, str, float]:
    match = _CONDITION.match(text)
    if match is None:
        raise ValueError(f"filter condition {text!r} must look like 'sync_confidence >= 0.4'")
    return match.group(1), match.group(2), float(match.group(3))


def _holds(condition: str, values: dict[str, Any]) -> bool:
    score, op, threshold = parse_condition(condition)
    if score not in values:
        raise KeyError(f"filter condition names unknown score '{score}'; known: {sorted(values)}")
    value = values[score]
    return value is not None and _OPERATORS[op](value, threshold)


@dataclass(frozen=True)
class ScoreRange:
    """Keep a clip whose value lies in [min, max]; a missing value fails (nothing is kept unmeasured)."""

    rule: FilterRule

    def reasons(self, values: dict[str, Any]) -> list[str]:
        name, rule = self.rule.reason_name, self.rule
        if rule.score not in values:
            raise KeyError(f"filter names unknown score '{rule.score}'; known: {sorted(values)}")
        if rule.when is not None and not _holds(rule.when, values):
            return []
        value = values[rule.score]
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return [f"{name}: not measured"]
        if rule.min is not None and value < rule.min:
            return [f"{name}: {value:.4g} < min {rule.min:g}"]
        if rule.max is not None and value > rule.max:
            return [f"{name}: {value:.4g} > max {rule.max:g}"]
        return []


def reason_name(reason: str) -> str:
    """The rule name a reason string starts with (for counting rejections by reason)."""
    return reason.split(":", 1)[0]


def apply_filters(clip: Clip, rules: tuple[FilterRule, ...]) -> None:
    """Set the clip's status and *all* the reasons it fails."""
    clip.reasons = failed_rules(clip, rules)
    clip.status = REJECTED if clip.reasons else KEPT


def failed_rules(clip: Clip, rules: tuple[FilterRule, ...]) -> list[str]:
    values = clip_values(clip)
    return [reason for rule in rules for reason in ScoreRange(rule).reasons(values)]


def split_rules(rules: tuple[FilterRule, ...], learned: frozenset[str]) -> tuple[tuple[FilterRule, ...], tuple[FilterRule, ...]]:
    """(rules the decoder applies, rules that wait for inference): a rule waits if it or its `when` names a
    learned score, so a clip is never judged on a score not yet made."""

    def waits(rule: FilterRule) -> bool:
        return rule.score in learned or (rule.when is not None and parse_condition(rule.when)[0] in learned)

    return tuple(r for r in rules if not waits(r)), tuple(r for r in rules if waits(r))


def source_sync_correction(clips: list[Clip], cfg: SyncCorrectionConfig) -> float:
    """The audio shift (ms) that undoes a source's small, confident offset; 0 when there is none to trust.

    A source's offset is usually constant (a muxing or capture delay), so it is estimated from all its
    confident clips: the confidence-weighted median of their offsets.
    """
    if not cfg.enabled:
        return 0.0
    measured = [
        (c.scores.av_offset_ms, c.scores.sync_confidence)
        for c in clips
        if c.scores.av_offset_ms is not None and (c.scores.sync_confidence or 0.0) >= cfg.min_confidence
    ]
    if not measured:
        return 0.0
    offsets, weights = (np.array(x, dtype=np.float64) for x in zip(*measured))
    order = np.argsort(offsets)
    cumulative = np.cumsum(weights[order])
    median = float(offsets[order][np.searchsorted(cumulative, cumulative[-1] / 2)])
    if not cfg.min_abs_offset_ms <= abs(median) <= cfg.max_abs_offset_ms:
        return 0.0
    return round(median, 1)
