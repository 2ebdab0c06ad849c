"""The learned stages' plan, made by the launcher before anything is decoded, and their per-clip finish.

`prepare_learned` loads each configured model once, on the launcher's CPU, through the same loading path the
workers use: a model that cannot be loaded (no weights, no hub access) stops the run here, with the error
naming what to pass, before any source is decoded. It keeps what the rest of the run needs of the models: the
decoder's input spec (frame size and crop, audio rate), the model cards, and the prompts' text embeddings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import Config, FilterRule, ZeroShotRule
from .filters import failed_rules, split_rules
from .inputs import InputSpec
from .model import AUDIO, KEPT, REJECTED, VISUAL, Clip
from .scorers.learned import CorrespondenceScorer, TextBank, ZeroShotScorer, rule_prompts, vocabulary_prompts


@dataclass(frozen=True)
class LearnedPlan:
    spec: InputSpec
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> model card
    banks: dict[str, TextBank] = field(default_factory=dict)  # role -> every prompt that model answers


def prepare_learned(cfg: Config) -> LearnedPlan | None:
    """None when no model is configured. Raises models.ModelUnavailable."""
    if not cfg.models.enabled:
        return None
    from .models import ClapAudioModel, OpenClipImageModel, resolve_device

    cpu = resolve_device("cpu")
    cards, banks, prep, rate = {}, {}, None, None
    for role, name in ((VISUAL, cfg.models.visual.name), (AUDIO, cfg.models.audio.name)):
        if name is None:
            continue
        if role == VISUAL:
            model: Any = OpenClipImageModel.load(cfg.models.visual, cpu, "fp32")
            prep = model.prep
        else:
            model = ClapAudioModel.load(cfg.models.audio, cpu, "fp32")
            rate = model.sample_rate
        cards[role] = model.card.to_dict()
        prompts = _prompts(cfg, role)
        banks[role] = TextBank(prompts, model.embed_texts(list(prompts)), float(model.logit_scale))
        del model
    spec = InputSpec(prep, cfg.models.visual.frames_per_clip, rate, cfg.models.audio.max_s)
    return LearnedPlan(spec, cards, banks)


def _prompts(cfg: Config, role: str) -> tuple[str, ...]:
    prompts = list(vocabulary_prompts(role, cfg.correspondence))
    for rule in cfg.zero_shot:
        if rule.model == role:
            prompts += [p for p in rule_prompts(rule, cfg.correspondence) if p not in prompts]
    return tuple(prompts)


class LearnedFinish:
    """Scores a clip from its embeddings, then applies the rules that waited for them."""

    def __init__(self, cfg: Config, plan: LearnedPlan) -> None:
        self.scorers: list[Any] = [ZeroShotScorer(rule, plan.banks[rule.model], cfg.correspondence) for rule in cfg.zero_shot]
        if VISUAL in plan.banks and AUDIO in plan.banks:
            self.scorers.append(CorrespondenceScorer(plan.banks[VISUAL], plan.banks[AUDIO], cfg.correspondence))
        _, waiting = split_rules(cfg.filters, cfg.learned_scores)
        # Zero-shot rules are filter rules on their own score.
        self.rules = waiting + tuple(_as_filter(rule) for rule in cfg.zero_shot)

    def __call__(self, clip: Clip) -> Clip:
        zero_shot, scores = dict(clip.zero_shot), dataclasses.replace(clip.scores)
        clip = dataclasses.replace(clip, inputs=None, zero_shot=zero_shot, scores=scores, reasons=list(clip.reasons))
        for scorer in self.scorers:
            for name, value in scorer.score(clip).items():
                if hasattr(scores, name):
                    setattr(scores, name, value)
                else:
                    zero_shot[name] = value
        clip.reasons += failed_rules(clip, self.rules)
        clip.status = REJECTED if clip.reasons else KEPT
        return clip


def _as_filter(rule: ZeroShotRule) -> FilterRule:
    return FilterRule(rule.name, min=rule.min, max=rule.max)


def mark_duplicate(clip: Clip, duplicate_of: str, similarity: float, threshold: float) -> Clip:
    """Reject a near-copy, naming the clip kept in its place."""
    scores = dataclasses.replace(clip.scores, duplicate_similarity=round(float(similarity), 6))
    reason = f"near_duplicate: {similarity:.4f} >= {threshold:g} with {duplicate_of}"
    return dataclasses.replace(clip, scores=scores, duplicate_of=duplicate_of, status=REJECTED, reasons=[*clip.reasons, reason])


def mean_embedding(frames: np.ndarray) -> np.ndarray:
    """The clip's visual embedding: the L2-normalised mean of its frames' normalised embeddings."""
    mean = frames.astype(np.float64).mean(axis=0)
    return (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)
