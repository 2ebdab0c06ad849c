"""The report as one self-contained HTML page: inline CSS and SVG charts, no script, previews linked relatively
from `report_files/`. Deterministic: nothing in it depends on when it is built."""

from __future__ import annotations

import html
import os
from typing import Any, Iterable

import numpy as np
import yaml

from ..model import KEPT
from . import plots
from .examples import Example, Examples
from ..runrecord import NAME as RUN_RECORD
from .gather import OutputData
from .previews import MAX_S, Preview
from .provenance import Provenance
from .scores import Rule, Score

MAX_FAILURES_SHOWN = 50  # per error type; the ledger has them all

_CSS = """
:root { --kept: #3a7bd5; --rejected: #e8833a; --failed: #c0392b; --muted: #666; --line: #ddd; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #222;
       margin: 0; background: #fafafa; }
header { background: #1f2d3d; color: #fff; padding: 18px 32px 12px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header .where { color: #c8d3df; font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
nav { margin-top: 10px; display: flex; flex-wrap: wrap; gap: 4px 16px; }
nav a { color: #9cc3ff; text-decoration: none; font-size: 13px; }
main { max-width: 1320px; margin: 0 auto; padding: 8px 32px 48px; }
section { margin-top: 28px; }
h2 { font-size: 18px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.note { background: #fff7e0; border-left: 4px solid #e0b000; padding: 8px 12px; margin: 8px 0; }
.muted { color: var(--muted); }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 16px; min-width: 150px; }
.card .number { font-size: 24px; font-weight: 600; }
.card.kept .number { color: var(--kept); } .card.rejected .number { color: var(--rejected); }
.card.failed .number { color: var(--failed); }
table { border-collapse: collapse; background: #fff; margin: 6px 0; }
th, td { border: 1px solid var(--line); padding: 3px 10px; text-align: left; vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
code, pre, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
pre { background: #fff; border: 1px solid var(--line); padding: 10px; overflow-x: auto; }
.row { display: flex; flex-wrap: wrap; gap: 16px 28px; align-items: flex-start; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 14px; }
figure { background: #fff; border: 1px solid var(--line); border-radius: 6px; margin: 0; padding: 8px 10px; }
figure svg { width: 100%; height: auto; }
figcaption { font-size: 13px; }
figcaption .rule { color: #c0392b; }
.examples { display: grid; grid-template-columns: repeat(auto-fill, minmax(400px, 1fr)); gap: 12px; }
.example { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
.example.rejected { border-left: 4px solid var(--rejected); } .example.kept { border-left: 4px solid var(--kept); }
.example img { width: 100%; height: auto; display: block; margin-bottom: 6px; }
.example video { width: 100%; max-height: 240px; background: #000; }
.example .meta { font-size: 12px; word-break: break-all; }
.example .reasons { color: #a04000; font-size: 12px; margin: 4px 0 0; padding-left: 18px; }
details summary { cursor: pointer; }
"""

_SECTIONS = (("run", "Run"), ("inputs", "Inputs"), ("rejections", "Rejections"), ("scores", "Scores"),
             ("examples", "Examples"), ("provenance", "Provenance"), ("time", "Time"), ("config", "Config"))  # fmt: skip


def render_page(
    data: OutputData, rules: list[Rule], scores: list[Score], rejected_rows: dict[str, np.ndarray],
    examples: Examples, previews: dict[str, Preview], provenance: Provenance,
) -> str:
    name = os.path.basename(data.output) or data.output
    body = [
        _run(data),
        _inputs(data),
        _rejections(data, rejected_rows),
        _scores(data, rules, scores),
        _examples(examples, previews),
        _provenance(provenance),
        _time(data),
        _config(data, rules),
    ]
    nav = "".join(f'<a href="#{key}">{title}</a>' for key, title in _SECTIONS)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>avcurate report: {_e(name)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header><h1>avcurate run report</h1><div class="where">{_e(data.output)}</div><nav>{nav}</nav></header>\n'
        f"<main>\n{''.join(body)}</main>\n</body>\n</html>\n"
    )


def _run(data: OutputData) -> str:
    s = data.summary
    clips = s["clips"] or 1
    cards = [
        _card("inputs", s["inputs"], _duration(s["media_seconds"]) + " of media"),
        _card("clips kept", s["clips_kept"], f"{_duration(s['kept_seconds'])}, {s['clips_kept'] / clips:.0%} of clips", "kept"),
        _card("clips rejected", s["clips_rejected"], f"{s['clips_rejected'] / clips:.0%} of clips", "rejected"),
        _card("inputs failed", data.inputs_by_status.get("failed", 0), "see Inputs", "failed"),
        _card("shards", s["shards"], f"{s['shard_bytes'] / 1e6:.1f} MB"),
    ]
    if data.run is None:
        facts = (f'<p class="note">This output has no <code>{RUN_RECORD}</code> (a run before avcurate recorded its '
                 "runs wrote it): its command, configuration, thresholds and timings are unknown. Everything else here "
                 "comes from its index, ledger and shards.</p>")  # fmt: skip
    else:
        run = data.run
        rows = [
            ("command", f'<code>{_e(run.get("command", ""))}</code>'),
            ("inputs", "<br>".join(f"<code>{_e(i)}</code>" for i in run.get("inputs", []))),
            ("started", _e(run.get("started", ""))),
            ("wall clock", _e(_duration(run["wall_s"])) if "wall_s" in run else ""),
            ("runner", f'{_e(run.get("runner", ""))}, {_e(run.get("workers", ""))} workers'),
            ("resumed / incremental", f'{_yes(run.get("resumed"))} / {_yes(run.get("incremental"))}'),
            ("config hash", f'<code>{_e(run.get("config_hash", ""))}</code>'),
        ]
        facts = _table(["", ""], rows, header=False)
    return _section("run", "Run", f'<div class="cards">{"".join(cards)}</div>{facts}')


def _inputs(data: OutputData) -> str:
    total = sum(data.inputs_by_status.values()) or 1
    rows = [
        (f"<b>{_e(status)}</b>", _n(count), _pct(count / total), _e(_duration(data.media_s_by_status[status])))
        for status, count in data.inputs_by_status.items()
    ]
    parts = [
        "<p>One ledger row per input: <b>kept</b> (at least one clip kept), <b>rejected</b> (every clip rejected), "
        "<b>failed</b> (no clips: the error says why), and any other outcome the ledger records.</p>",
        _table(["status", "inputs", "share", "media (probed)"], rows),
    ]
    if data.excluded_by:
        parts += ["<h3>Excluded, by what excluded them</h3>",
                  _table(["excluded by", "inputs"], [(_e(k), _n(v)) for k, v in data.excluded_by.items()])]  # fmt: skip
    if data.failures:
        parts.append("<h3>Failures by cause</h3>")
    for error_type, failures in data.failures.items():
        shown = failures[:MAX_FAILURES_SHOWN]
        rows = [(f'<span class="mono">{_e(f.uri)}</span>', _e(f.error)) for f in shown]
        more = len(failures) - len(shown)
        extra = f'<p class="muted">and {_n(more)} more in ledger.parquet</p>' if more else ""
        parts.append(f'<details open class="failures" data-error-type="{_e(error_type)}"><summary><b>{_e(error_type)}'
                     f"</b>: {_n(len(failures))} input(s)</summary>{_table(['input', 'error'], rows)}{extra}</details>")
    return _section("inputs", "Inputs (the ledger)", "".join(parts))


def _rejections(data: OutputData, rejected_rows: dict[str, np.ndarray]) -> str:
    if not rejected_rows:
        return _section("rejections", "Rejections by rule", "<p>No clip was rejected.</p>")
    everything = np.concatenate(list(rejected_rows.values()))
    rows_seen, times = np.unique(everything, return_counts=True)
    only = set(rows_seen[times == 1].tolist())
    clips = data.summary["clips"] or 1
    ranked = sorted(rejected_rows.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    table = [
        (f'<a href="#examples-{_e(rule)}">{_e(rule)}</a>', _n(len(rows)), _pct(len(rows) / clips),
         _n(sum(row in only for row in rows.tolist())))
        for rule, rows in ranked
    ]  # fmt: skip
    chart = plots.bars("rejections", [rule for rule, _ in ranked], {"clips": [len(rows) for _, rows in ranked]},
                       "clips rejected")  # fmt: skip
    text = ("<p>A clip failing several rules counts for each; <i>only this rule</i> counts the clips it alone "
            "rejected (what loosening it alone would keep).</p>")
    return _section("rejections", "Rejections by rule", text + '<div class="row">' + _figure(chart, "rejections")
                    + _table(["rule", "clips rejected", "of all clips", "only this rule"], table) + "</div>")  # fmt: skip


def _scores(data: OutputData, rules: list[Rule], scores: list[Score]) -> str:
    kept = data.index["status"].to_numpy(zero_copy_only=False) == KEPT
    figures = []
    for score in scores:
        svg = plots.histogram(score, kept)
        lines = [f"<b>{_e(score.name)}</b>: measured on {_n(score.measured)} of {_n(len(score.values))} clips"]
        for on in score.rules:
            applies = "" if on.rule.when is None else f", applies to {_n(on.applies_to)} clips"
            lines.append(f'<span class="rule">rule {_e(on.rule.name)}: {_e(_bounds(on.rule))}{applies}</span>')
        bounds = "; ".join(f"{on.rule.name}: {_bounds(on.rule)}" for on in score.rules)
        figures.append(f'<figure class="histogram" data-score="{_e(score.name)}" data-thresholds="{_e(bounds)}">'
                       f"{svg}<figcaption>{'<br>'.join(lines)}</figcaption></figure>")  # fmt: skip
    intro = ("<p>Every score with values, kept and rejected clips stacked; each rule's bounds are the dashed lines "
             "(a rule with a condition judges only the clips meeting it). Scores with rules come first.</p>")
    if not rules:
        intro += '<p class="note">The run\'s rules are unknown (no run.json), so no thresholds are drawn.</p>'
    return _section("scores", "Scores", intro + f'<div class="charts">{"".join(figures)}</div>')


def _examples(examples: Examples, previews: dict[str, Preview]) -> str:
    parts = [f"<p>Chosen deterministically, spread over sources. Each shows six frames over the whole clip and "
             f"plays its first {MAX_S:g} s at most, 240p; kept clips come from their shard (what training gets), "
             "rejected ones are cut again from their source.</p>",
             f'<h3 id="examples-kept">Kept</h3>{_example_grid(examples.kept, previews, "kept")}']  # fmt: skip
    for rule, chosen in examples.rejected.items():
        parts.append(f'<section class="rule-examples" data-rule="{_e(rule)}"><h3 id="examples-{_e(rule)}">Rejected by '
                     f"{_e(rule)}</h3>{_example_grid(chosen, previews, 'rejected')}</section>")  # fmt: skip
    if not examples.rejected:
        parts.append("<p>No clip was rejected.</p>")
    return _section("examples", "Examples", "".join(parts))


def _example_grid(examples: list[Example], previews: dict[str, Preview], kind: str) -> str:
    if not examples:
        return '<p class="muted">none</p>'
    cards = []
    for example in examples:
        preview = previews[example.key]
        if preview.problem is None:
            media = (f'<img src="{_e(preview.strip)}" alt="frames of {_e(example.key)}">'
                     f'<video controls preload="metadata" src="{_e(preview.video)}"></video>')  # fmt: skip
        else:
            media = f'<p class="note">No preview: {_e(preview.problem)}</p>'
        where = f"shard {example.shard}" if example.shard else "not in a shard"
        reasons = "".join(f"<li>{_e(r)}</li>" for r in example.reasons)
        cards.append(
            f'<div class="example {kind}" data-key="{_e(example.key)}">{media}<div class="meta"><b class="mono">'
            f"{_e(example.key)}</b> · {example.start_s:.2f}–{example.end_s:.2f} s · {_e(where)}<br>"
            f'<span class="mono muted">{_e(example.source_uri)}</span></div>'
            + (f'<ul class="reasons">{reasons}</ul>' if reasons else "") + "</div>"
        )  # fmt: skip
    return f'<div class="examples">{"".join(cards)}</div>'


def _provenance(provenance: Provenance) -> str:
    if not provenance.columns and not provenance.not_summarised:
        return _section("provenance", "Provenance", "<p>The inputs carry no manifest columns. Curate a manifest "
                        "(a CSV, Parquet or JSON-lines file with a <code>uri</code> column) whose other columns, such as "
                        "license, uploader or origin_url, are carried into every clip and summarised here.</p>")  # fmt: skip
    parts = ["<p>The manifest's columns, carried into every clip's <code>source_meta</code>: kept clips and kept "
             "time per value, the commonest first. URLs count by their domain.</p>"]
    for column in provenance.columns:
        title = f"{column.name} (by domain)" if column.by_domain else column.name
        total_s = sum(v.kept_s for v in column.values)
        unit, scale = ("h", 3600.0) if total_s >= 7200 else ("min", 60.0) if total_s >= 120 else ("s", 1.0)
        chart = plots.bars(f"provenance-{column.name}", [v.value for v in column.values],
                           {f"kept {unit}": [round(v.kept_s / scale, 2) for v in column.values]}, f"kept time ({unit})")  # fmt: skip
        rows = [(_e(v.value), _n(v.sources), _n(v.kept_clips), _e(_duration(v.kept_s)), _pct(v.kept_s / (total_s or 1)),
                 _n(v.rejected_clips)) for v in column.values]  # fmt: skip
        table = _table(["value", "sources with clips", "kept clips", "kept time", "of kept time", "rejected clips"], rows)
        parts.append(f'<div class="provenance" data-column="{_e(column.name)}"><h3>{_e(title)}</h3>'
                     f'<p class="muted">{_n(column.distinct)} distinct value(s)</p><div class="row">'
                     f"{_figure(chart, f'provenance-{column.name}')}{table}</div></div>")  # fmt: skip
    if provenance.not_summarised:
        names = ", ".join(f"<code>{_e(n)}</code>" for n in provenance.not_summarised)
        parts.append(f"<p class=\"muted\">Also carried, but with (nearly) one value per source, so not summarised: {names}.</p>")
    return _section("provenance", "Provenance", "".join(parts))


def _time(data: OutputData) -> str:
    if data.run is None or not data.run.get("stages"):
        return _section("time", "Where the time went", f'<p class="note">Unknown: this output has no {RUN_RECORD} '
                        "with stage timings.</p>")  # fmt: skip
    stages = data.run["stages"]
    names = [stage["stage"] for stage in stages]
    chart = plots.bars("stages", names, {"CPU s": [float(s.get("cpu_s") or 0) for s in stages],
                                         "wall s": [float(s.get("wall_s") or 0) for s in stages]}, "seconds")  # fmt: skip
    cpu_total = sum(float(s.get("cpu_s") or 0) for s in stages) or 1.0
    rows = [(f"<code>{_e(s['stage'])}</code>", f"{float(s.get('cpu_s') or 0):.2f}", f"{float(s.get('wall_s') or 0):.2f}",
             _pct(float(s.get("cpu_s") or 0) / cpu_total)) for s in stages]  # fmt: skip
    table = _table(["stage", "CPU s", "wall s", "of CPU"], rows)
    counters = data.run.get("counters") or {}
    counter_rows = [(f"<code>{_e(k)}</code>", _n(v)) for k, v in sorted(counters.items())]
    extra = (f"<details><summary>Counters ({len(counters)})</summary>{_table(['counter', 'value'], counter_rows)}</details>"
             if counters else "")  # fmt: skip
    wall = data.run.get("wall_s")
    text = ("<p>CPU and wall seconds per stage, in the order data flows"
            + (f"; the whole run took {_e(_duration(wall))} wall clock" if wall is not None else "")
            + ". Stages overlap (workers run in parallel), so their wall times need not add up to the run's.</p>")
    return _section("time", "Where the time went", text + f'<div class="row">{_figure(chart, "stages")}{table}</div>{extra}')


def _config(data: OutputData, rules: list[Rule]) -> str:
    config = data.config
    if config is None:
        return _section("config", "Configuration", f'<p class="note">Unknown: this output has no {RUN_RECORD}. Its '
                        "clips name their config by <code>config_hash</code> in the index.</p>")  # fmt: skip
    rows = [(_e(r.name), f"<code>{_e(r.score)}</code>", _opt(r.min), _opt(r.max), _e(r.when or "")) for r in rules]
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=110)
    return _section("config", "Configuration", "<h3>Rules</h3>"
                    + _table(["rule", "score", "min", "max", "when"], rows)
                    + f"<details><summary>Every setting (YAML)</summary><pre>{_e(text)}</pre></details>")  # fmt: skip


# --- small pieces ---------------------------------------------------------------------------------------


def _section(key: str, title: str, content: str) -> str:
    return f'<section id="{key}"><h2>{_e(title)}</h2>{content}</section>\n'


def _card(label: str, number: Any, detail: str, kind: str = "") -> str:
    return (f'<div class="card {kind}"><div class="muted">{_e(label)}</div><div class="number">{_n(number)}</div>'
            f'<div class="muted">{_e(detail)}</div></div>')  # fmt: skip


def _figure(svg: str, name: str) -> str:
    return f'<figure class="chart" data-chart="{_e(name)}">{svg}</figure>'


def _table(columns: list[str], rows: Iterable[tuple[str, ...]], *, header: bool = True) -> str:
    """Cells are HTML already; column names are text."""
    head = f"<tr>{''.join(f'<th>{_e(c)}</th>' for c in columns)}</tr>" if header else ""
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _cell(content: str) -> str:
    """A cell, right-aligned when it holds a number (a count, a share, seconds)."""
    plain = content.replace(",", "").replace("%", "").replace(".", "", 1).lstrip("-")
    return f'<td class="n">{content}</td>' if plain.isdigit() else f"<td>{content}</td>"


def _bounds(rule: Rule) -> str:
    parts = ([f"min {rule.min:g}"] if rule.min is not None else []) + ([f"max {rule.max:g}"] if rule.max is not None else [])
    return ", ".join(parts) + (f" when {rule.when}" if rule.when else "")


def _duration(seconds: float) -> str:
    if seconds >= 7200:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else _e(str(value))


def _pct(share: float) -> str:
    return f"{share:.1%}"


def _opt(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _yes(value: Any) -> str:
    return "yes" if value else "no"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)
