"""The scores a report plots, one value per clip: the index's score columns, the values rules compute from them
(as `avcurate.filters.clip_values` does for one clip) and zero-shot probabilities; each with the rules on it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..filters import parse_condition
from ..model import ClipScores

# duration_s first (every run has it), then the index's score columns in schema order.
_COLUMNS = ("duration_s", *(f.name for f in dataclasses.fields(ClipScores)))
# What the report reads of the index for the scores: those, and the columns derived values come from.
INDEX_COLUMNS = (*_COLUMNS, "source_width", "source_height", "sync_correction_ms")


@dataclass(frozen=True)
class Rule:
    """A filter or zero-shot rule of the run's config: clips outside [min, max] of `score` are rejected as `name`."""

    name: str
    score: str
    min: float | None = None
    max: float | None = None
    when: str | None = None


@dataclass(frozen=True)
class RuleOnScore:
    rule: Rule
    applies_to: int  # clips the rule judged: all of them, or those meeting its `when`


@dataclass(frozen=True)
class Score:
    name: str
    values: np.ndarray  # float64 per index row, NaN where not measured
    rules: tuple[RuleOnScore, ...]

    @property
    def measured(self) -> int:
        return int(np.isfinite(self.values).sum())


def config_rules(config: dict[str, Any] | None) -> list[Rule]:
    """The filters, then the zero-shot rules, of a config as `Config.to_dict` gives it (None: no rules known)."""
    if not config:
        return []
    rules = [
        Rule(r.get("name") or r["score"], r["score"], r.get("min"), r.get("max"), r.get("when"))
        for r in config.get("filters") or []
    ]
    rules += [Rule(r["name"], r["name"], r.get("min"), r.get("max")) for r in config.get("zero_shot") or []]
    return rules


def wants_zero_shot(config: dict[str, Any] | None) -> bool:
    """Whether the index's zero_shot column can hold anything: a run's config has zero-shot rules, or is unknown."""
    return not config or bool(config.get("zero_shot"))


def clip_scores(index: pa.Table, rules: list[Rule], zero_shot: pa.ChunkedArray | None = None) -> list[Score]:
    """The scores rules name (in rule order, measured or not), then every other score some clip has.
    `zero_shot`: the index's JSON column of zero-shot probabilities (dictionary-encoded or not), where read."""
    if zero_shot is None and "zero_shot" in index.column_names:
        zero_shot = index["zero_shot"]
    lookup = _Values(index, zero_shot)
    names = list(dict.fromkeys(rule.score for rule in rules))
    names += [name for name in [*_COLUMNS, *lookup.zero_shot_names] if name not in names]
    scores = []
    for name in names:
        values = lookup.get(name)
        on_it = tuple(
            RuleOnScore(rule, index.num_rows if rule.when is None else int(_holds(rule.when, lookup).sum()))
            for rule in rules if rule.score == name
        )  # fmt: skip
        if values is None:
            values = np.full(index.num_rows, np.nan)
        if on_it or np.isfinite(values).any():
            scores.append(Score(name, values, on_it))
    return scores


def _holds(condition: str, lookup: _Values) -> np.ndarray:
    score, op, threshold = parse_condition(condition)
    values = lookup.get(score)
    if values is None:
        return np.zeros(lookup.rows, dtype=bool)
    with np.errstate(invalid="ignore"):  # NaN compares false: an unmeasured condition score does not hold
        return {">=": np.greater_equal, "<=": np.less_equal, ">": np.greater, "<": np.less}[op](values, threshold)


class _Values:
    """Score values by name from the index columns, computing the derived ones on demand."""

    def __init__(self, index: pa.Table, zero_shot: pa.ChunkedArray | None) -> None:
        self.index, self.rows, self._zero_shot_column = index, index.num_rows, zero_shot
        self._zero_shot: dict[str, np.ndarray] | None = None
        self._derived: dict[str, Callable[[], np.ndarray | None]] = {
            "source_short_side": lambda: self._both(np.minimum, "source_width", "source_height"),
            "residual_av_offset_ms": lambda: self._both(np.subtract, "av_offset_ms", "sync_correction_ms"),
            "abs_av_offset_ms": lambda: _abs(self.get("residual_av_offset_ms")),
            "abs_lip_offset_ms": lambda: _abs(self._both(np.subtract, "lip_offset_ms", "sync_correction_ms")),
        }

    def get(self, name: str) -> np.ndarray | None:
        if name in self.index.column_names:
            return self.column(name)
        if name in self._derived:
            return self._derived[name]()
        return self.zero_shot.get(name)

    def column(self, name: str) -> np.ndarray | None:
        if name not in self.index.column_names:
            return None
        return pc.cast(self.index[name], pa.float64()).to_numpy(zero_copy_only=False)

    def _both(self, op: Callable[[np.ndarray, np.ndarray], np.ndarray], a: str, b: str) -> np.ndarray | None:
        left, right = self.column(a), self.column(b)
        return None if left is None or right is None else op(left, right)

    @property
    def zero_shot_names(self) -> list[str]:
        return sorted(self.zero_shot)

    @property
    def zero_shot(self) -> dict[str, np.ndarray]:
        """Rule name -> probability per clip, from the index's JSON column (NaN where a clip has none), each
        distinct text parsed once."""
        if self._zero_shot is None:
            self._zero_shot = {}
            column = self._zero_shot_column
            if column is not None and len(column):
                encoded = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)
                encoded = encoded.combine_chunks()
                texts = encoded.dictionary.to_pylist()
                if any(text not in (None, "{}") for text in texts):  # parse only if a model ran
                    codes = encoded.indices.fill_null(len(texts)).to_numpy(zero_copy_only=False)
                    parsed = [json.loads(text or "{}") for text in texts]
                    for name in sorted({name for probabilities in parsed for name in probabilities}):
                        per_text = np.array([_probability(p.get(name)) for p in parsed] + [np.nan])  # + a null row
                        self._zero_shot[name] = per_text[codes]
        return self._zero_shot


def _probability(value: Any) -> float:
    return np.nan if value is None else float(value)


def _abs(values: np.ndarray | None) -> np.ndarray | None:
    return None if values is None else np.abs(values)
