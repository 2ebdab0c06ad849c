"""Scores from learned embeddings, after inference: zero-shot text rules and AV correspondence.

Plain numpy over a clip's embeddings and the prompts' text embeddings (a `TextBank`, embedded once by the
launcher), so no model is needed here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import CorrespondenceConfig, ZeroShotRule
from ..model import AUDIO, VISUAL, Clip


@dataclass(frozen=True)
class TextBank:
    """Prompts one model embedded, with the temperature it was trained with (its logit scale)."""

    prompts: tuple[str, ...]
    embeddings: np.ndarray  # float32 [prompts, dim], L2-normalised
    logit_scale: float

    def distribution(self, embedding: np.ndarray, prompts: tuple[str, ...]) -> np.ndarray:
        """The model's zero-shot probabilities of `prompts` for one L2-normalised embedding (CLIP's softmax
        over scaled cosine similarities)."""
        rows = [self.prompts.index(p) for p in prompts]
        logits = self.logit_scale * (self.embeddings[rows] @ embedding.astype(np.float32))
        logits -= logits.max()
        weights = np.exp(logits.astype(np.float64))
        return weights / weights.sum()


def rule_prompts(rule: ZeroShotRule, correspondence: CorrespondenceConfig) -> tuple[str, ...]:
    """What a rule's prompts compete against: its contrast, or else the shared vocabulary in the model's words."""
    contrast = rule.contrast or vocabulary_prompts(rule.model, correspondence)
    return (*rule.prompts, *(p for p in contrast if p not in rule.prompts))


def vocabulary_prompts(role: str, cfg: CorrespondenceConfig) -> tuple[str, ...]:
    template = cfg.visual_template if role == VISUAL else cfg.audio_template
    return tuple(template.format(source) for source in cfg.vocabulary)


class ZeroShotScorer:
    """`rule.name`: the probability the clip shows (or sounds like) the rule's prompts rather than the others."""

    def __init__(self, rule: ZeroShotRule, bank: TextBank, correspondence: CorrespondenceConfig) -> None:
        self.rule, self.bank = rule, bank
        self.name = f"zero_shot/{rule.name}"
        self.prompts = rule_prompts(rule, correspondence)

    def score(self, clip: Clip) -> dict[str, float]:
        probabilities = self.bank.distribution(clip.embeddings[self.rule.model], self.prompts)
        return {self.rule.name: round(float(probabilities[: len(self.rule.prompts)].sum()), 6)}


class CorrespondenceScorer:
    """`av_correspondence`: whether the sound belongs to the picture, as the Bhattacharyya coefficient
    sum(sqrt(p_visual * p_audio)) of the two models' zero-shot distributions over one vocabulary of sound
    sources ("a dog" in the picture, "the sound of a dog" in the audio). 1 when both models name the same
    sources with the same confidence, near 0 when they name different ones. Symmetric and bounded, unlike a
    KL divergence, and it needs no training data: each model only answers in its own modality."""

    name = "av_correspondence"

    def __init__(self, visual: TextBank, audio: TextBank, cfg: CorrespondenceConfig) -> None:
        self.visual, self.audio = visual, audio
        self.visual_prompts, self.audio_prompts = vocabulary_prompts(VISUAL, cfg), vocabulary_prompts(AUDIO, cfg)

    def score(self, clip: Clip) -> dict[str, float]:
        p_visual = self.visual.distribution(clip.embeddings[VISUAL], self.visual_prompts)
        p_audio = self.audio.distribution(clip.embeddings[AUDIO], self.audio_prompts)
        return {self.name: round(float(np.sqrt(p_visual * p_audio).sum()), 6)}
