"""How well av_correspondence separates clips with their own audio from the same clips with another's.

Reads a finished run made with both models (its index has `visual_embedding` and `audio_embedding`), scores
every kept clip's picture against its own sound and against the sound of a clip from another source (a fixed
derangement), and prints the ROC AUC of own vs swapped: 0.5 is chance, 1.0 perfect separation.

    python benchmarks/bench_correspondence.py --config my-models.yaml OUTPUT [--json result.json]

The config must be the run's own (the same models and vocabulary): the prompts are embedded again here.
The figure means something only with real weights on real footage; with the tests' random models it shows
that the measurement runs, nothing more.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from avcurate.config import Config
from avcurate.learned import prepare_learned
from avcurate.model import AUDIO, VISUAL, Clip
from avcurate.scorers.learned import CorrespondenceScorer


def auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half (the Mann-Whitney U statistic)."""
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positives) * len(negatives)))


def swapped_partner(sources: list[str]) -> list[int]:
    """For each clip, the next clip (cyclically, in key order) from another source; -1 if there is none."""
    partners = []
    for i, source in enumerate(sources):
        others = [j for j in list(range(i + 1, len(sources))) + list(range(i)) if sources[j] != source]
        partners.append(others[0] if others else -1)
    return partners


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output")
    parser.add_argument("--config", required=True)
    parser.add_argument("--json")
    args = parser.parse_args()
    cfg = Config.load(args.config)
    plan = prepare_learned(cfg)
    if plan is None or VISUAL not in plan.banks or AUDIO not in plan.banks:
        print("the config must set both models.visual and models.audio", file=sys.stderr)
        return 2
    index = pq.read_table(f"{args.output}/index.parquet")
    index = index.filter(pc.and_(pc.is_valid(index["visual_embedding"]), pc.is_valid(index["audio_embedding"])))
    visual = np.stack(index["visual_embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    audio = np.stack(index["audio_embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    sources = index["source_id"].to_pylist()
    scorer = CorrespondenceScorer(plan.banks[VISUAL], plan.banks[AUDIO], cfg.correspondence)

    def score(v: np.ndarray, a: np.ndarray) -> float:
        clip = Clip("", "", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, embeddings={VISUAL: v, AUDIO: a})
        return scorer.score(clip)["av_correspondence"]

    partners = swapped_partner(sources)
    pairs = [(i, j) for i, j in enumerate(partners) if j >= 0]
    own = np.array([score(visual[i], audio[i]) for i, _ in pairs])
    swapped = np.array([score(visual[i], audio[j]) for i, j in pairs])
    result = {
        "clips": len(pairs),
        "sources": len(set(sources)),
        "auc": round(auc(own, swapped), 4) if pairs else None,
        "own_mean": round(float(own.mean()), 4) if pairs else None,
        "swapped_mean": round(float(swapped.mean()), 4) if pairs else None,
        "models": plan.cards,
    }
    print(f"{result['clips']} clips from {result['sources']} sources: AUC own vs swapped audio {result['auc']} "
          f"(mean score own {result['own_mean']}, swapped {result['swapped_mean']})")
    for role, card in plan.cards.items():
        print(f"  {role}: {card['library']} {card['library_version']} {card['name']} {card['pretrained'] or ''}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
