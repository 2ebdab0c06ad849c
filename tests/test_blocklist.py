"""Block lists (opt-outs, takedowns): listed sources are never decoded and are recorded as excluded; an
incremental rerun with a longer list takes their clips out of a finished output, surviving a kill."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from avcurate.beam.blocklist import content_sha256
from avcurate.blocklist import SHA256, SOURCE_ID, URI, BlockListError, Match, load, parse_entry
from avcurate.config import BlockListConfig, Config, ConfigError
from avcurate.faults import ENV as FAULTS
from avcurate.loader import AVClipDataset
from avcurate.model import AUDIO, EXCLUDED, KEPT, VISUAL, Clip, source_id_for
from avcurate.sample import SampleSet
from avcurate.schemas import validate_index, validate_ledger
from avcurate.summary import format_summary, summarize
from avcurate.writers.shards import ShardInfo, ShardPlan, remove_samples, write_shard
from runs import DEMO_CONFIG, assert_same_outputs, digests, run_cli


def sha256_entry(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def run_args(inputs: Path, output: Path, *extra: str) -> list[str]:
    return ["run", "--config", str(DEMO_CONFIG), "--input", str(inputs), "--output", str(output), "--workers", "2",
            "--json", *extra]  # fmt: skip


def command(inputs: Path, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "avcurate.cli", *run_args(inputs, output, *extra)]


def run_ok(args: list[str], env: dict[str, str] | None = None) -> dict:
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def members(shard: Path) -> list[str]:
    with tarfile.open(shard) as tar:
        return tar.getnames()


def whole_sources_by_shard(index: pd.DataFrame) -> dict[str, list[str]]:
    """shard -> the sources all of whose kept clips are in that shard (a source may straddle two)."""
    kept = index[index["status"] == KEPT]
    shards_of = kept.groupby("source_id")["shard"].unique()
    by_shard: dict[str, list[str]] = defaultdict(list)
    for source_id, shards in shards_of.items():
        if len(shards) == 1:
            by_shard[shards[0]].append(source_id)
    return dict(by_shard)


# --- entries and config ---------------------------------------------------------------------------------------


def test_entries_are_told_apart_and_bad_ones_refused() -> None:
    digest = "AB" * 32
    assert parse_entry(f"  sha256:{digest} ") == (SHA256, digest.lower())
    assert parse_entry("0123456789ABCDEF") == (SOURCE_ID, "0123456789abcdef")
    assert parse_entry("gs://bucket/a b #2.mp4") == (URI, "gs://bucket/a b #2.mp4")  # '#' inside a name stays
    name = 'Café 東京 #2 "final" it\'s.v1.2.mp4'  # the sample set's
    assert parse_entry(f"raw/{name}") == (URI, f"raw/{name}") and parse_entry("a#b.mp4") == (URI, "a#b.mp4")
    for bad, hint in [("sha256:abc", "64 hex digits"), ("0123456789abcdef  # ticket 42", "one entry per line"),
                      ("gs://b/a.mp4  # ticket 42", "one entry per line"), ("gs://b/a.mp4\t#", "one entry per line"),
                      ("raw/a.mp4 # opted out", "source id or sha256"),
                      (f"sha256:{digest} ticket", "one entry per line"), ("md5:0123", "no entry kind")]:  # fmt: skip
        with pytest.raises(BlockListError, match=hint):
            parse_entry(bad)


def test_lists_are_read_once_each_and_named_after_their_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    digest = "ab" * 32
    (tmp_path / "takedowns.txt").write_text(f"# requests\n\n  raw/a #1.mp4\n0123456789abcdef\nsha256:{digest}\n",
                                            encoding="utf-8")  # fmt: skip
    loaded = load([BlockListConfig("optouts", entries=("gs://b/x.mp4",))], ["takedowns.txt"])
    assert loaded.match(str(tmp_path / "raw" / "a #1.mp4"), "f" * 16) == Match("takedowns", URI)  # absolute form
    assert loaded.match("gs://b/x.mp4", "f" * 16).reason == "excluded by block list 'optouts' (its uri entry)"
    assert loaded.match("gs://b/y.mp4", "0123456789abcdef") == Match("takedowns", SOURCE_ID)
    assert loaded.match_content(digest) == Match("takedowns", SHA256) and loaded.match("gs://b/y.mp4", "f" * 16) is None
    assert loaded.digest and load([]).digest == "" and not load([])
    with pytest.raises(ConfigError, match="two block lists are named 'takedowns'"):
        load([BlockListConfig("takedowns", entries=("x.mp4",))], ["takedowns.txt"])
    with pytest.raises(ConfigError, match=r"block list 'gone' \(gone.txt\): no such file"):
        load([], ["gone.txt"])


def test_relative_entries_start_from_their_list_files_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A list file's relative entries, as a manifest's, from its folder; the config's from the current folder."""
    (tmp_path / "lists").mkdir()
    (tmp_path / "work").mkdir()
    (tmp_path / "lists" / "takedowns.txt").write_text("../raw/a.mp4\nb.mp4\n/abs/c.mp4\ngs://b/d.mp4\n",
                                                      encoding="utf-8")  # fmt: skip
    monkeypatch.chdir(tmp_path / "work")
    loaded = load([BlockListConfig("inline", entries=("raw/e.mp4",))], ["../lists/takedowns.txt"])
    assert loaded.match(str(tmp_path / "raw" / "a.mp4"), "f" * 16) == Match("takedowns", URI)
    assert loaded.match(str(tmp_path / "lists" / "b.mp4"), "f" * 16) == Match("takedowns", URI)
    assert loaded.match("/abs/c.mp4", "f" * 16) and loaded.match("gs://b/d.mp4", "f" * 16)
    assert loaded.match(str(tmp_path / "work" / "b.mp4"), "f" * 16) is None  # not from the current folder
    assert loaded.match(str(tmp_path / "work" / "raw" / "e.mp4"), "f" * 16) == Match("inline", URI)


def test_block_lists_stay_out_of_the_config_hash() -> None:
    """So a dataset's block list can grow between incremental runs, which need the same config_hash."""
    listed = Config.from_dict({"blocklists": [{"name": "takedowns", "entries": ["gs://b/x.mp4"]}]})
    assert listed.blocklists[0].entries == ("gs://b/x.mp4",)
    assert listed.hash == Config().hash
    with pytest.raises(ConfigError, match=r"block list 'takedowns' \(entries\[1\]\).*64 hex digits"):
        Config.from_dict({"blocklists": [{"name": "takedowns", "entries": ["gs://b/x.mp4", "sha256:12"]}]})
    with pytest.raises(ConfigError, match="needs a name"):
        Config.from_dict({"blocklists": [{"entries": ["gs://b/x.mp4"]}]})
    with pytest.raises(ConfigError, match="unique"):
        Config.from_dict({"blocklists": [{"name": "a", "entries": ["x.mp4"]}, {"name": "a", "file": "f.txt"}]})


def test_content_is_hashed_only_from_regular_files(tmp_path: Path) -> None:
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x" * 3_000_000)  # more than one read
    assert content_sha256(str(video)) == (hashlib.sha256(video.read_bytes()).hexdigest(), None)
    assert content_sha256(str(tmp_path / "gone.mp4")) == (None, None)  # curation records it as not found
    os.mkfifo(tmp_path / "pipe.mp4")  # reading it would block for ever
    digest, problem = content_sha256(str(tmp_path / "pipe.mp4"))
    assert digest is None and "not a regular file" in problem


@pytest.mark.parametrize(
    "config, line, message",
    [
        ("blocklists: [{name: takedowns, entries: ['sha256:beef']}]", None,
         r"block list 'takedowns' \(entries\[0\]\): 'sha256:beef' is not a sha256 entry"),
        (None, "0123456789abcdef  # ticket 42",
         r"block list 'optouts' \(.*optouts.txt, line 3\): .*one entry per line"),
    ],
    ids=["config", "file"],
)  # fmt: skip
def test_a_bad_entry_stops_the_run_before_it_starts(
    tmp_path: Path, config: str | None, line: str | None, message: str
) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").touch()
    extra = []
    if config is not None:
        (tmp_path / "c.yaml").write_text(DEMO_CONFIG.read_text() + "\n" + config + "\n", encoding="utf-8")
        extra += ["--config", str(tmp_path / "c.yaml")]
    if line is not None:
        (tmp_path / "optouts.txt").write_text(f"# opt-outs\n\n{line}\n", encoding="utf-8")
        extra += ["--blocklist", str(tmp_path / "optouts.txt")]
    done = run_cli("run", "--input", str(videos), "--output", str(tmp_path / "out"), *extra)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("avcurate: block list"), done.stderr
    assert re.search(message, done.stderr), done.stderr
    assert not (tmp_path / "out").exists()  # refused before the output was touched


# --- a run with block lists ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blocked_run(sample_set: SampleSet, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[str, str]]:
    """The demo over the sample set with a list of each kind of entry in the config and one given as a file:
    the hanging FIFO by URI, a kept source by source id and one by content, another kept one by a relative path.
    The output, the JSON summary, and each blocked file's name -> (list, entry kind)."""
    folder = tmp_path_factory.mktemp("blocked")
    talk, vfr, street = sample_set["talk"].path, sample_set["vfr"].path, sample_set["street"].path
    entries = [str(sample_set["hang"].path), source_id_for(str(talk)), sha256_entry(vfr)]
    config = folder / "config.yaml"
    listed = f"\nblocklists:\n  - {{name: takedowns, entries: {json.dumps(entries)}}}\n"
    config.write_text(DEMO_CONFIG.read_text() + listed, encoding="utf-8")
    optouts = folder / "optouts.txt"
    optouts.write_text(f"# opt-outs, one a line\n\n{os.path.relpath(street, folder)}\n", encoding="utf-8")  # from its folder
    output = folder / "out"
    done = run_cli("run", "--config", str(config), "--input", str(sample_set.folder), "--output", str(output),
                   "--workers", "2", "--json", "--blocklist", str(optouts))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    blocked = {"hang.mp4": ("takedowns", URI), talk.name: ("takedowns", SOURCE_ID), vfr.name: ("takedowns", SHA256),
               street.name: ("optouts", URI)}  # fmt: skip
    return output, json.loads(done.stdout), blocked


@pytest.mark.slow
def test_listed_sources_are_excluded_and_never_decoded(
    sample_set: SampleSet, blocked_run: tuple[Path, dict, dict[str, str]]
) -> None:
    output, summary, blocked = blocked_run
    ledger = pd.read_parquet(output / "ledger.parquet")
    validate_ledger(pq.read_table(output / "ledger.parquet"))
    assert len(ledger) == len(sample_set.files)  # every input is accounted for, excluded ones too
    excluded = ledger[ledger["status"] == EXCLUDED]
    assert {Path(uri).name for uri in excluded["uri"]} == set(blocked)
    for row in excluded.to_dict("records"):
        name, kind = blocked[Path(row["uri"]).name]
        assert row["excluded_by"] == name
        assert row["error"] == f"excluded by block list '{name}' (its {kind} entry)"
        # Never probed: the FIFO would have failed with a timeout, the others would have probe columns.
        assert row["n_clips"] == 0 and pd.isna(row["probe_format_name"]) and pd.isna(row["error_type"])
    assert ledger[ledger["status"] != EXCLUDED]["excluded_by"].isna().all()
    assert summary["inputs_excluded"] == summary["counters"]["inputs_excluded"] == len(blocked)
    assert "timeout" not in {failure["error_type"] for failure in summary["failures"]}
    assert "failed 6, excluded 4);" in format_summary(summarize(str(output))).splitlines()[0]

    index = pd.read_parquet(output / "index.parquet")
    excluded_ids = set(excluded["source_id"])
    assert not set(index["source_id"]) & excluded_ids
    in_shards = {name.split("-")[0] for shard in (output / "shards").glob("*.tar") for name in members(shard)}
    assert in_shards and not in_shards & excluded_ids


@pytest.mark.slow
def test_other_sources_come_out_as_without_block_lists(
    demo_run: tuple[Path, dict], blocked_run: tuple[Path, dict, dict[str, str]]
) -> None:
    """Every other clip's index row is the one a run without lists makes, config_hash included (only the shard
    it landed in differs: fewer clips are packed)."""
    blocked_index = pd.read_parquet(blocked_run[0] / "index.parquet").drop(columns="shard").set_index("key")
    full = pd.read_parquet(demo_run[0] / "index.parquet").drop(columns="shard").set_index("key")
    assert len(blocked_index) < len(full)
    assert full.loc[blocked_index.index].equals(blocked_index)


# --- a takedown across a rerun ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def takedown(
    sample_set: SampleSet, demo_run: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[str], Path]:
    """The demo's finished output, then the same inputs again with --incremental and a block list naming two
    kept sources whose clips share one shard (one by URI, one by content). The output, the two source ids, and
    the block list."""
    index = pd.read_parquet(demo_run[0] / "index.parquet")
    shard, sources = max(whole_sources_by_shard(index).items(), key=lambda item: len(item[1]))
    assert len(sources) >= 2 and index["shard"].nunique() >= 2  # another shard to stay untouched
    by_id = {source_id_for(str(f.path)): f.path for f in sample_set.files}
    first, second = by_id[sources[0]], by_id[sources[1]]
    folder = tmp_path_factory.mktemp("takedown")
    takedowns = folder / "takedowns.txt"
    takedowns.write_text(f"# takedown requests\n{first}\n{sha256_entry(second)}\n", encoding="utf-8")
    output = folder / "out"
    shutil.copytree(demo_run[0], output)
    summary = run_ok(command(sample_set.folder, output, "--incremental", "--blocklist", str(takedowns)))
    assert summary["counters"]["inputs"] == summary["counters"]["inputs_excluded"] == 2  # nothing decoded
    return output, sources[:2], takedowns


@pytest.mark.slow
def test_a_takedown_removes_a_curated_source_from_the_output(
    demo_run: tuple[Path, dict], takedown: tuple[Path, list[str], Path]
) -> None:
    base, (output, taken, _) = demo_run[0], takedown
    before, after = digests(base), digests(output)
    index_before = pd.read_parquet(base / "index.parquet")
    index = pd.read_parquet(output / "index.parquet")
    validate_index(pq.read_table(output / "index.parquet"))
    validate_ledger(pq.read_table(output / "ledger.parquet"))

    assert not index["source_id"].isin(taken).any()
    others = index_before[~index_before["source_id"].isin(taken)].reset_index(drop=True)
    assert index.reset_index(drop=True).equals(others)  # every other row as it was, in its shard

    rewritten = set(index_before[index_before["source_id"].isin(taken)]["shard"])
    data = [sorted(n for n in names if not n.startswith("report_files/")) for names in (before, after)]
    assert len(rewritten) == 1 and data[0] == data[1]  # same files, same shard names
    previews = [n.removeprefix("report_files/") for n in after if n.startswith("report_files/")]
    assert previews and not {n.split("-")[0] for n in previews} & set(taken)  # the report shows none of them either
    for name in sorted(p.name for p in (base / "shards").glob("*.tar")):
        remaining = members(output / "shards" / name)
        assert not {m.split("-")[0] for m in remaining} & set(taken)
        if name in rewritten:
            assert remaining == [m for m in members(base / "shards" / name) if m.split("-")[0] not in taken]
        else:
            assert after[f"shards/{name}"] == before[f"shards/{name}"]  # untouched, byte for byte

    ledger = pd.read_parquet(output / "ledger.parquet").set_index("source_id")
    ledger_before = pd.read_parquet(base / "ledger.parquet").set_index("source_id")
    assert (ledger.loc[taken, "status"] == EXCLUDED).all() and (ledger.loc[taken, "excluded_by"] == "takedowns").all()
    assert sorted(ledger.loc[taken, "error"]) == ["excluded by block list 'takedowns' (its sha256 entry)",
                                                 "excluded by block list 'takedowns' (its uri entry)"]  # fmt: skip
    assert ledger.drop(index=taken).equals(ledger_before.drop(index=taken))

    shards = sorted(str(p) for p in (output / "shards").glob("*.tar"))
    loaded = list(AVClipDataset(shards, shuffle_shards=False, decode_audio=False))  # reads every shard
    assert sorted(s["key"] for s in loaded) == sorted(index[index["status"] == KEPT]["key"])


@pytest.mark.slow
def test_a_takedown_killed_midway_is_finished_by_the_same_command(
    sample_set: SampleSet, demo_run: tuple[Path, dict], takedown: tuple[Path, list[str], Path], tmp_path: Path
) -> None:
    expected, _, takedowns = takedown  # the demo has no embedding arrays: the unit test below kills between them
    output = tmp_path / "out"
    shutil.copytree(demo_run[0], output)
    again = command(sample_set.folder, output, "--incremental", "--blocklist", str(takedowns))
    env = {**os.environ, FAULTS: json.dumps([{"at": "takedown", "do": "kill-run", "after": 1}])}
    killed = subprocess.run(again, env=env, start_new_session=True, capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL
    assert [p.name for p in (output / "shards").iterdir() if ".tmp-" in p.name]  # half a shard, under a temporary name

    other = tmp_path / "takedowns.txt"
    other.write_text(takedowns.read_text(encoding="utf-8").splitlines()[1] + "\n", encoding="utf-8")
    refused = run_cli(*run_args(sample_set.folder, output, "--incremental", "--blocklist", str(other)))
    # Other lists: refused, since the takedown is half done.
    assert refused.returncode == 2 and "block lists" in refused.stderr

    resumed = subprocess.run(again, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the unfinished run" in resumed.stderr
    assert_same_outputs(expected, output)


@pytest.mark.slow
def test_a_takedown_reaches_sources_no_longer_listed(
    sample_set: SampleSet, takedown: tuple[Path, list[str], Path], tmp_path: Path
) -> None:
    """A ledger row named by source id is excluded though its file is not among the inputs (deleted since);
    sources excluded before stay so; a plain rerun is refused and says how to apply a changed list."""
    done, taken, _ = takedown
    output = tmp_path / "out"
    shutil.copytree(done, output)
    index = pd.read_parquet(output / "index.parquet")
    (shard, sources), *_ = [(s, ids) for s, ids in whole_sources_by_shard(index).items() if ids]
    later = sources[0]
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{later}\n", encoding="utf-8")
    one_input = sample_set["black_silent"].path  # known: nothing is curated

    plain = run_cli(*run_args(one_input, output, "--blocklist", str(ids)))
    assert plain.returncode == 2 and "--incremental to add the inputs it does not have yet and apply a changed " \
        "block list" in plain.stderr  # fmt: skip

    summary = run_ok(command(one_input, output, "--incremental", "--blocklist", str(ids)))
    assert summary["counters"]["inputs"] == summary["counters"]["inputs_excluded"] == 1
    ledger = pd.read_parquet(output / "ledger.parquet").set_index("source_id")
    assert ledger.loc[later, "status"] == EXCLUDED and ledger.loc[later, "excluded_by"] == "ids"
    assert ledger.loc[later, "error"] == "excluded by block list 'ids' (its source id entry)"
    assert (ledger.loc[taken, "excluded_by"] == "takedowns").all()  # excluded earlier, by the other list
    assert not pd.read_parquet(output / "index.parquet")["source_id"].isin([later, *taken]).any()
    assert not any(m.startswith(later) for m in members(output / "shards" / shard))


# --- shards rewritten without some samples -------------------------------------------------------------------


def clip(staged: Path, index: int, embeddings: dict[str, np.ndarray]) -> Clip:
    data = staged.read_bytes()
    return Clip(source_id=f"{index % 3:016x}", source_uri=f"/v/{index % 3}.mp4", clip_index=index, start_s=0.0,
                end_s=1.0, n_frames=25, fps=25.0, width=96, height=64, sample_rate=16000, channels=1,
                source_width=96, source_height=64, config_hash="0123456789ab", embeddings=embeddings,
                staged_path=str(staged), mp4_bytes=len(data))  # fmt: skip


def test_a_shard_rewritten_without_samples_equals_one_written_without_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    clips = []
    for i in range(6):
        staged = tmp_path / f"staged-{i}.mp4"
        staged.write_bytes(rng.bytes(700 + 300 * i))
        roles = {VISUAL: rng.standard_normal(8).astype(np.float32)}
        if i != 2:  # one clip without audio: a NaN row in its shard's audio array
            roles[AUDIO] = rng.standard_normal(4).astype(np.float32)
        clips.append(clip(staged, i, roles))
    taken = {c.key for c in clips if c.source_id == f"{1:016x}"}
    remaining = [c for c in clips if c.key not in taken]

    def write(folder: Path, these: list[Clip]) -> None:
        plan = ShardPlan("clips-000000.tar", sorted(these, key=lambda c: c.key), 0)
        write_shard(plan, str(folder / "shards"), str(folder / "embeddings"))

    write(tmp_path / "fresh", remaining)
    write(tmp_path / "out", clips)
    out = tmp_path / "out"
    array = out / "embeddings" / AUDIO / "clips-000000.npy"
    original = [c.key for c in clips]  # the shard's kept rows in the base's index

    def take_down(folder: Path, held: list[str], removed: set[str]) -> ShardInfo | None:
        return remove_samples("clips-000000.tar", held, removed, str(folder / "shards"), str(folder / "embeddings"))

    info = take_down(out, original, taken)
    assert info is not None and info.n_clips == len(remaining) and len(info.embedding_files) == 2
    assert digests(out) == digests(tmp_path / "fresh")
    assert take_down(out, original, taken) is None and digests(out) == digests(tmp_path / "fresh")  # done already
    assert np.load(array).shape == (len(remaining), 4) and np.isnan(np.load(array)).any()

    # Killed after the arrays, before the tar (arrays go first): doing it again leaves the arrays, rewrites the tar.
    write(tmp_path / "half", clips)
    half = tmp_path / "half"
    shutil.copytree(out / "embeddings", half / "embeddings", dirs_exist_ok=True)
    assert {m.split(".")[0] for m in members(half / "shards" / "clips-000000.tar")} == set(original)  # every sample
    assert take_down(half, original, taken) is not None
    assert digests(half) == digests(out)

    # A state the order rules out (the tar rewritten, the arrays not: a run of an earlier version) also finishes:
    # the rows are told by the original keys, not by the tar.
    write(tmp_path / "old", clips)
    old = tmp_path / "old"
    shutil.copy(out / "shards" / "clips-000000.tar", old / "shards" / "clips-000000.tar")
    assert take_down(old, original, taken) is None
    assert digests(old) == digests(out)

    # Arrays or a tar that do not hold what the index says are left as they were, not cut out of line.
    write(tmp_path / "wrong", clips)
    wrong = tmp_path / "wrong"
    before = digests(wrong)
    with pytest.raises(ValueError, match="do not match"):  # a row per original sample: 6 rows, not 7
        take_down(wrong, [*original, "zzz"], taken)
    assert digests(wrong) == before
    shutil.copytree(out / "embeddings", wrong / "embeddings", dirs_exist_ok=True)  # arrays cut: 4 rows, as said
    before = digests(wrong)
    with pytest.raises(ValueError, match="other samples than the index says"):
        take_down(wrong, ["zzz", *(key for key in original if key != remaining[0].key)], taken)
    assert digests(wrong) == before

    # Every sample taken down: an empty tar keeps the shard's name (numbers stay contiguous), arrays keep no row.
    assert take_down(out, [c.key for c in remaining], {c.key for c in remaining})
    assert members(out / "shards" / "clips-000000.tar") == [] and np.load(array).shape == (0, 4)
