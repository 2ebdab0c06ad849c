"""The run report: built from an output folder alone, reproducible previews, and a page that a real browser
(Debian's headless Chromium) opens without an error, with every chart, threshold, image and video in place."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from avcurate.config import Config
from avcurate.model import KEPT, REJECTED, Clip, ClipScores, ProbeInfo, Source, SourceResult
from avcurate.report import write_report
from avcurate.report.browser import chromium_available, open_chromium, page_url
from avcurate.report.examples import choose_examples
from avcurate.runrecord import run_record
from avcurate.runstate import FINAL, prepare_output
from avcurate.writers.tables import index_batch, ledger_batch, write_table
from runs import DEMO_CONFIG, digests, run_cli


def _record() -> dict:
    """A run's record (run.json) of the demo config, as `avcurate run` writes it."""
    return run_record(command=["avcurate", "run"], runner="local", workers=2, inputs=["samples/"], started=0.0,
                      wall_s=13.7, resumed=False, incremental=False, cfg=Config.load(DEMO_CONFIG), counters={})  # fmt: skip


@pytest.fixture(scope="module")
def rebuilt(demo_run: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo run's output, its report rebuilt by `avcurate report`."""
    output = tmp_path_factory.mktemp("report") / "out"
    shutil.copytree(demo_run[0], output)
    done = run_cli("report", str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"{output}/report.html"
    return output


def _report_files(output: Path) -> dict[str, str]:
    return {name: digest for name, digest in digests(output).items() if name.startswith("report_files/")}


def test_every_run_writes_a_report_and_a_rebuild_gives_the_same_previews(demo_run: tuple[Path, dict], rebuilt: Path) -> None:
    written = demo_run[0]
    assert (written / "report.html").is_file()
    previews = _report_files(written)
    assert previews and previews == _report_files(rebuilt)  # byte for byte
    # Those of every kept example and of each rule's rejected ones: a strip and a clip each.
    examples = choose_examples(pq.read_table(written / "index.parquet"))
    keys = {e.key for e in examples.kept} | {e.key for chosen in examples.rejected.values() for e in chosen}
    assert set(previews) == {f"report_files/{key}.{ext}" for key in keys for ext in ("jpg", "mp4")}


def test_the_report_opens_in_chromium_with_every_part_in_place(demo_run: tuple[Path, dict], rebuilt: Path) -> None:
    if not chromium_available():
        pytest.fail("chromium and chromedriver are missing: scripts/setup.sh --prism installs them")
    summary, config = demo_run[1], json.loads((rebuilt / "run.json").read_text())["config"]
    driver = open_chromium()
    try:
        driver.get(page_url(rebuilt / "report.html"))
        deadline = time.monotonic() + 30
        ready = "return [...document.querySelectorAll('video')].every(v => v.readyState >= 1 || v.error)"
        while not driver.execute_script(ready) and time.monotonic() < deadline:
            time.sleep(0.2)
        severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert severe == []  # a failed resource load is logged as one too
        images = driver.execute_script(
            "return [...document.images].map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
        videos = driver.execute_script(
            "return [...document.querySelectorAll('video')].map(v => [v.getAttribute('src'), v.readyState, v.duration,"
            " v.error && v.error.code])")  # fmt: skip
        assert images and all(loaded for _, loaded in images), images
        assert videos and all(state >= 1 and duration > 0 and error is None for _, state, duration, error in videos), videos
        # Nothing from the network: every image and video sits beside the page.
        assert all(src.startswith("report_files/") for src, *_ in images + videos)
        assert driver.execute_script("return document.querySelectorAll('script, link[rel=stylesheet]').length") == 0

        for rule in config["filters"]:  # a histogram of every filter's score, its bounds drawn on it
            score = rule["score"]
            lines = driver.execute_script(
                "return [...document.querySelectorAll(`figure.histogram[data-score='${arguments[0]}'] "
                "[id^='threshold-${arguments[0]}-']`)].map(e => e.id)", score)  # fmt: skip
            bounds = [bound for bound in ("min", "max") if rule.get(bound) is not None]
            assert sorted(line.rsplit("-", 1)[1] for line in lines) == sorted(bounds), (score, lines)

        rejected_rules = driver.execute_script(
            "return [...document.querySelectorAll('section.rule-examples')]"
            ".filter(s => s.querySelector('.example video')).map(s => s.dataset.rule)")  # fmt: skip
        assert sorted(rejected_rules) == sorted(summary["rejected_by_reason"])  # every rule that rejected a clip
        kept = driver.execute_script("return document.querySelectorAll('.example.kept video').length")
        assert kept == min(6, summary["clips_kept"])
        stages = driver.execute_script("return document.querySelectorAll('figure[data-chart=stages] svg').length")
        assert stages == 1
    finally:
        driver.quit()


def _clip(status: str, index: int, reasons: list[str], meta: dict, sharpness: float, uri: str = "") -> Clip:
    return Clip(
        source_id=f"{index:016x}", source_uri=uri or f"/gone/{index}.mp4", clip_index=0, start_s=0.0, end_s=2.0, n_frames=50,
        fps=25.0, width=96, height=64, source_width=384, source_height=288, sample_rate=16000, channels=1,
        scores=ClipScores(sharpness=sharpness, silence_ratio=0.1), status=status, reasons=reasons, source_meta=meta,
        shard="clips-000000.tar" if status == KEPT else None,
    )  # fmt: skip


def _older_output(folder: Path, meta: list[dict] | None = None, rejected_uri: str = "") -> None:
    """Kept and rejected clips of sources that are gone, from a manifest; a failed input; no run.json."""
    meta = meta or [{"license": "CC0-1.0", "origin_url": f"https://www.example.org/v/{i}"} for i in range(3)]
    clips = [_clip(KEPT, 0, [], meta[0], 80.0), _clip(KEPT, 1, [], meta[1], 60.0),
             _clip(REJECTED, 2, ["sharpness: 5 < min 25"], meta[2], 5.0, rejected_uri)]  # fmt: skip
    probe = ProbeInfo(format_name="mp4", duration_s=2.0, size_bytes=1, has_video=True, has_audio=True)
    results = [SourceResult(Source.from_uri(c.source_uri), probe=probe, clips=[c]) for c in clips]
    results.append(SourceResult(Source.from_uri("/gone/broken.mp4"), error="moov atom not found", error_type="probe"))
    (folder / "shards").mkdir(parents=True)
    write_table(index_batch(clips), str(folder / "index.parquet"))
    write_table(ledger_batch(results), str(folder / "ledger.parquet"))


def test_an_older_output_with_its_sources_gone_still_gets_a_report(tmp_path: Path) -> None:
    _older_output(tmp_path)
    page = Path(write_report(str(tmp_path))).read_text(encoding="utf-8")
    assert "has no <code>run.json</code>" in page and "no thresholds are drawn" in page
    assert page.count("No preview: ") == 3  # two kept clips whose shard is missing, one rejected whose source is gone
    assert 'data-score="sharpness"' in page and "threshold-" not in page
    assert 'data-error-type="probe"' in page and "moov atom not found" in page
    assert 'data-column="origin_url"' in page and "example.org" in page and "www.example.org" not in page
    assert not (tmp_path / "report_files").exists() or not any((tmp_path / "report_files").iterdir())
    assert Path(write_report(str(tmp_path))).read_text(encoding="utf-8") == page  # nothing in it changes by itself


def test_a_preview_of_a_source_that_hangs_is_stopped_and_noted(tmp_path: Path) -> None:
    fifo = tmp_path / "hangs.mp4"
    os.mkfifo(fifo)  # the rejected clip's source is now a pipe with no writer: opening it blocks forever
    output = tmp_path / "out"
    _older_output(output, rejected_uri=str(fifo))
    started = time.monotonic()
    page = Path(write_report(str(output), preview_timeout_s=2.0)).read_text(encoding="utf-8")
    assert time.monotonic() - started < 30  # the sandbox's start, the 2 s deadline and the rest of the page
    assert "No preview: could not be cut from its source again (timeout: previewing took longer than 2 s" in page
    assert page.count("No preview: ") == 3 and 'data-score="sharpness"' in page  # the report went on


def test_manifest_values_that_are_neither_text_nor_urls_to_matplotlib_get_a_report(tmp_path: Path) -> None:
    # "$" starts mathtext in matplotlib ("A$_$B" cannot be parsed), and "http://[x" makes urlsplit raise.
    meta = [{"license": "A$_$B", "origin_url": "http://[x"}, {"license": "$", "origin_url": "https://example.org/1"},
            {"license": "CC0-1.0", "origin_url": None}]  # fmt: skip
    _older_output(tmp_path, meta=meta)
    page = Path(write_report(str(tmp_path))).read_text(encoding="utf-8")
    assert 'data-column="license"' in page and "A$_$B" in page
    assert 'data-column="origin_url"' in page and "http://[x" in page and "example.org" in page


def test_a_run_where_every_input_failed_gets_a_report(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    write_table(index_batch([]), str(tmp_path / "index.parquet"))
    write_table(ledger_batch([SourceResult(Source.from_uri("/v.mp4"), error="empty", error_type="probe")]),
                str(tmp_path / "ledger.parquet"))  # fmt: skip
    (tmp_path / "run.json").write_text(json.dumps(_record()), encoding="utf-8")
    page = Path(write_report(str(tmp_path))).read_text(encoding="utf-8")
    assert "No clip was rejected." in page and 'data-error-type="probe"' in page
    assert "not measured on any clip" in page  # the rules' scores, drawn with their thresholds all the same
    assert 'id="threshold-sharpness-0-min"' in page


def test_report_refuses_a_folder_without_a_finished_run(tmp_path: Path) -> None:
    done = run_cli("report", str(tmp_path))
    assert done.returncode == 2
    assert "not a finished avcurate output" in done.stderr and "Traceback" not in done.stderr


def test_examples_spread_over_sources_first() -> None:
    keys = [f"{source:016x}-{clip:05d}" for source in range(3) for clip in range(10)]
    index = pa.table({
        "key": keys, "source_id": [k.split("-")[0] for k in keys], "source_uri": ["u"] * 30, "clip_index": [0] * 30,
        "start_s": [0.0] * 30, "end_s": [1.0] * 30, "n_frames": [25] * 30, "fps": [25.0] * 30, "sample_rate": [16000] * 30,
        "channels": [1] * 30, "status": [KEPT] * 30, "reasons": [[]] * 30, "shard": ["s.tar"] * 30,
    })  # fmt: skip
    picked = [keys.index(e.key) for e in choose_examples(index).kept]
    assert picked == [0, 5, 10, 15, 20, 25]  # each source's first clip, then evenly spaced others, in key order


def test_overwrite_removes_the_report_and_the_run_record(tmp_path: Path) -> None:
    for name in ("index.parquet", "ledger.parquet", "run.json", "report.html"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "report_files").mkdir()
    (tmp_path / "report_files" / "a.jpg").write_bytes(b"x")
    assert {"run.json", "report.html", "report_files"} <= set(FINAL)
    prepare_output(str(tmp_path), "hash", ["in"], overwrite=True, incremental=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_staging", "shards"]
