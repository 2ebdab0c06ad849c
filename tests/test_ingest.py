"""Inputs to Sources: files, folders, globs, manifests, remote filesystems; never blocking, never dropping."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from avcurate.beam.pipeline import build
from avcurate.beam.transforms import ListInputs
from avcurate.config import Config
from avcurate.ingest import IngestError, check_inputs, expand_inputs, open_uri
from avcurate.model import FAILED
from avcurate.process import curate_source
from avcurate.model import Source, source_id_for

SCHEME = "avtest://"


class FakeRemoteFileSystem(LocalFileSystem):
    """`avtest://bucket/key` served from a local folder: a remote-looking filesystem, registered with Beam
    by being a FileSystem subclass, so the remote code paths run without a network."""

    root: ClassVar[str] = ""

    @classmethod
    def scheme(cls) -> str:
        return SCHEME.rstrip(":/")

    def _local(self, uri: str) -> str:
        return os.path.join(self.root, uri[len(SCHEME) :])

    def _metadata(self, local: str) -> FileMetadata:
        uri = SCHEME + os.path.relpath(local, self.root)
        return FileMetadata(uri, os.path.getsize(local), os.path.getmtime(local))

    def join(self, base: str, *parts: str) -> str:
        return "/".join([base.rstrip("/"), *parts])

    def split(self, uri: str) -> tuple[str, str]:
        head, _, tail = uri.rpartition("/")
        return head, tail

    def _url_dirname(self, uri: str) -> str:
        return self.split(uri)[0]

    def exists(self, uri: str) -> bool:
        return os.path.isfile(self._local(uri))  # as in an object store, a "folder" is not an object

    def metadata(self, uri: str) -> FileMetadata:
        return self._metadata(self._local(uri))

    def _list(self, prefix: str) -> Iterator[FileMetadata]:
        for folder, _, names in os.walk(self._local(prefix)):
            yield from (self._metadata(os.path.join(folder, name)) for name in names)

    def open(self, uri: str, *args: Any, **kwargs: Any) -> Any:
        return super().open(self._local(uri), *args, **kwargs)

    def create(self, uri: str, *args: Any, **kwargs: Any) -> Any:
        return super().create(self._local(uri), *args, **kwargs)


def touch(path: Path, data: bytes = b"\0") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def uris(sources: list[Source]) -> list[str]:
    return [s.uri for s in sources]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Videos at three depths, in several extension cases, among files that are not videos."""
    for name in ["a.mp4", "b.MOV", "sub/c.mkv", "sub/deep/d.WebM", "sub/e.ts", "notes.txt", "sub/meta.json"]:
        touch(tmp_path / "videos" / name)
    return tmp_path / "videos"


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The local folder behind avtest://."""
    root = tmp_path / "remote"
    root.mkdir()
    monkeypatch.setattr(FakeRemoteFileSystem, "root", str(root))
    return root


def test_folder_is_scanned_recursively_for_video_extensions(tree: Path) -> None:
    found = expand_inputs([str(tree)])
    expected = ["a.mp4", "b.MOV", "sub/c.mkv", "sub/deep/d.WebM", "sub/e.ts"]
    assert uris(found) == sorted(str(tree / name) for name in expected)
    assert all(s.meta == {} for s in found)


def test_relative_inputs_become_absolute_paths(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree.parent)
    assert uris(expand_inputs(["videos/a.mp4", "videos/sub/../b.MOV"])) == [str(tree / "a.mp4"), str(tree / "b.MOV")]


def test_globs_use_beam_syntax_and_take_every_match(tree: Path) -> None:
    assert uris(expand_inputs([str(tree / "*.mp4")])) == [str(tree / "a.mp4")]
    assert uris(expand_inputs([str(tree / "**.mkv")])) == [str(tree / "sub/c.mkv")]
    # A glob is the user's own choice of files: no extension filter.
    assert str(tree / "sub/meta.json") in uris(expand_inputs([str(tree / "sub/*")]))


def test_results_are_sorted_deduplicated_and_ids_are_stable(tree: Path) -> None:
    inputs = [str(tree / "sub"), str(tree / "a.mp4"), str(tree), str(tree / "**.mp4")]
    first = expand_inputs(inputs)
    assert uris(first) == sorted(set(uris(first))) and len(first) == 5
    assert expand_inputs(list(reversed(inputs))) == first
    assert all(s.source_id == source_id_for(s.uri) for s in first)


def test_missing_file_and_dangling_link_are_kept_for_the_pipeline_to_report(tmp_path: Path) -> None:
    os.symlink(tmp_path / "nowhere.mp4", tmp_path / "link.mp4")
    found = expand_inputs([str(tmp_path / "gone.mp4"), str(tmp_path / "link.mp4")])
    assert uris(found) == [str(tmp_path / "gone.mp4"), str(tmp_path / "link.mp4")]


@pytest.mark.parametrize("pattern", ["nothing/*.mp4", "**.avi"])
def test_glob_matching_nothing_is_an_error(tmp_path: Path, pattern: str) -> None:
    with pytest.raises(IngestError, match="matched no files") as err:
        expand_inputs([str(tmp_path / pattern)])
    assert pattern in str(err.value) and "'**'" in str(err.value)


def test_folder_without_videos_is_an_error(tmp_path: Path) -> None:
    touch(tmp_path / "docs" / "readme.txt")
    with pytest.raises(IngestError, match="holds no video files") as err:
        expand_inputs([str(tmp_path / "docs")])
    assert str(tmp_path / "docs") in str(err.value)


def test_no_inputs_is_an_error() -> None:
    with pytest.raises(IngestError, match="no inputs"):
        expand_inputs([])
    with pytest.raises(IngestError, match="empty"):
        expand_inputs([" "])


def test_fifo_is_listed_without_being_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "hang.mp4")
    touch(tmp_path / "ok.mp4")
    results: list[list[Source]] = []
    inputs = [str(tmp_path), str(tmp_path / "hang.mp4"), str(tmp_path / "*.mp4")]
    # A daemon thread: if ingest ever opened the FIFO it would block for ever, and the test must still end.
    worker = threading.Thread(target=lambda: results.append(expand_inputs(inputs)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "expand_inputs blocked on a FIFO"
    assert uris(results[0]) == [str(tmp_path / "hang.mp4"), str(tmp_path / "ok.mp4")]


def test_manifest_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "list.csv")
    with pytest.raises(IngestError, match="not a regular file"):
        expand_inputs([str(tmp_path / "list.csv")])


ROWS = [
    {"uri": "clips/one.mp4", "label": "cat", "score": 0.5, "count": 3},
    {"uri": "two.mp4", "label": None, "score": float("nan"), "count": 4},
]


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        columns = list(rows[0])
        lines = [",".join(columns)] + [",".join(_csv_cell(row[c]) for c in columns) for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _csv_cell(value: Any) -> str:
    return "" if value is None or value != value else str(value)


@pytest.mark.parametrize("name", ["list.csv", "list.parquet", "list.jsonl", "list.json"])
def test_manifest_carries_columns_and_resolves_relative_uris(tmp_path: Path, name: str) -> None:
    manifest = write_manifest(tmp_path / "manifests" / name, ROWS)
    found = expand_inputs([str(manifest)])
    assert found == [
        Source.from_uri(str(tmp_path / "manifests/clips/one.mp4"), {"label": "cat", "score": 0.5, "count": 3}),
        Source.from_uri(str(tmp_path / "manifests/two.mp4"), {"count": 4}),  # None and NaN cells dropped
    ]
    assert all(type(s.meta["count"]) is int for s in found)


def test_manifest_keeps_absolute_and_remote_uris(tmp_path: Path) -> None:
    rows = [{"uri": "/data/x.mp4"}, {"uri": "gs://bucket/y.mp4"}, {"uri": "file:///data/z.mp4"}]
    found = expand_inputs([str(write_manifest(tmp_path / "m.jsonl", rows))])
    assert uris(found) == ["/data/x.mp4", "/data/z.mp4", "gs://bucket/y.mp4"]


def test_manifest_values_become_json_safe(tmp_path: Path) -> None:
    table = pa.table({"uri": ["v.mp4"], "when": pa.array([0], pa.timestamp("s")), "tags": [["a", "b"]]})
    pq.write_table(table, tmp_path / "m.parquet")
    (source,) = expand_inputs([str(tmp_path / "m.parquet")])
    assert source.meta == {"when": "1970-01-01T00:00:00", "tags": ["a", "b"]}
    json.dumps(source.meta)


@pytest.mark.parametrize("name", ["bad.csv", "bad.parquet", "bad.jsonl"])
def test_manifest_without_uri_column_names_file_and_column(tmp_path: Path, name: str) -> None:
    manifest = write_manifest(tmp_path / name, [{"path": "a.mp4", "label": "x"}])
    with pytest.raises(IngestError, match="no 'uri' column") as err:
        expand_inputs([str(manifest)])
    assert str(manifest) in str(err.value) and "path" in str(err.value)


def test_manifest_row_without_uri_becomes_a_failed_input(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", [{"uri": "a.mp4"}, {"label": "no uri"}])
    good, bad = expand_inputs([str(manifest)])
    assert good.uri == str(tmp_path / "a.mp4") and good.listing_error is None
    assert bad.uri == f"{manifest}#row=2" and bad.meta == {"label": "no uri"}
    assert "row 2" in bad.listing_error and "'uri' is empty" in bad.listing_error


def test_missing_manifest_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="not found"):
        expand_inputs([str(tmp_path / "absent.csv")])


def test_manifest_and_folder_listing_the_same_video_merge(tree: Path, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", [{"uri": str(tree / "a.mp4"), "split": "train"}])
    found = {s.uri: s.meta for s in expand_inputs([str(tree), str(manifest)])}
    assert len(found) == 5 and found[str(tree / "a.mp4")] == {"split": "train"}


def test_glob_ending_in_a_manifest_extension_reads_each_manifest(tmp_path: Path) -> None:
    write_manifest(tmp_path / "part-1.jsonl", [{"uri": "a.mp4", "part": 1}])
    write_manifest(tmp_path / "part-2.jsonl", [{"uri": "b.mp4", "part": 2}])
    found = expand_inputs([str(tmp_path / "part-*.jsonl")])
    expected = [Source.from_uri(str(tmp_path / f"{name}.mp4"), {"part": part}) for name, part in [("a", 1), ("b", 2)]]
    assert found == expected


def test_remote_file_glob_and_folder(remote: Path) -> None:
    for name in ["in/a.mp4", "in/b.mkv", "in/sub/c.MP4", "in/notes.txt"]:
        touch(remote / name)
    assert uris(expand_inputs(["avtest://in/a.mp4"])) == ["avtest://in/a.mp4"]
    assert uris(expand_inputs(["avtest://in/*.mkv"])) == ["avtest://in/b.mkv"]
    expected = ["avtest://in/a.mp4", "avtest://in/b.mkv", "avtest://in/sub/c.MP4"]
    assert uris(expand_inputs(["avtest://in/"])) == expected
    assert uris(expand_inputs(["avtest://in"])) == expected  # a prefix with videos under it
    assert uris(expand_inputs(["avtest://in/missing.mp4"])) == ["avtest://in/missing.mp4"]
    with pytest.raises(IngestError, match="matched no files"):
        expand_inputs(["avtest://in/*.avi"])


def test_remote_manifest_resolves_relative_uris_remotely(remote: Path) -> None:
    write_manifest(remote / "sets" / "m.csv", [{"uri": "v/a.mp4", "label": "dog"}])
    assert expand_inputs(["avtest://sets/m.csv"]) == [Source.from_uri("avtest://sets/v/a.mp4", {"label": "dog"})]


def test_unknown_filesystem_is_a_clear_error() -> None:
    with pytest.raises(IngestError, match="could not list 'nosuch://bucket/\\*.mp4'"):
        expand_inputs(["nosuch://bucket/*.mp4"])


def test_open_uri_reads_local_and_remote_bytes_as_stored(tmp_path: Path, remote: Path) -> None:
    payload = b"\x1f\x8b not really gzip"
    touch(tmp_path / "x.gz", payload)
    touch(remote / "y.gz", payload)
    for uri in (str(tmp_path / "x.gz"), "avtest://y.gz"):
        with open_uri(uri) as f:
            assert f.read() == payload
    with open_uri("avtest://out/z.bin", "wb") as f:
        f.write(b"written")
    assert (remote / "out" / "z.bin").read_bytes() == b"written"
    with pytest.raises(ValueError, match="modes"):
        open_uri(str(tmp_path / "x.gz"), "r")


# --- listing inside the pipeline ---


def _assert_listed_in_pipeline(inputs: list[str], expected: list[Source]) -> None:
    """ListInputs on Beam's local runner, as `build` wires it, gives `expected` (in any order)."""
    with beam.Pipeline(runner=FnApiRunner()) as p:
        listed = p | beam.Create(list(enumerate(check_inputs(inputs)))) | ListInputs()
        assert_that(listed, equal_to(expected))


def test_the_pipeline_lists_inputs_as_expand_inputs_does(tree: Path, tmp_path: Path) -> None:
    rows = [{"uri": str(tree / "a.mp4"), "split": f"s{n}", "n": n} for n in range(5)]  # the same uri, 5 times
    rows += [{"uri": f"v{n:03d}.mp4", "n": n} for n in range(40)]
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(rows), manifest, row_group_size=7)  # 7 row groups, read apart
    jsonl = write_manifest(tmp_path / "more.jsonl", [{"uri": str(tree / "a.mp4"), "split": "late", "extra": 1}])
    inputs = [str(tree / "**.mp4"), str(manifest), str(jsonl), str(tree), str(tmp_path / "gone.mp4")]
    expected = expand_inputs(inputs)
    assert len(expected) == 5 + 40 + 1
    assert {s.uri: s.meta for s in expected}[str(tree / "a.mp4")] == {"split": "s0", "n": 0, "extra": 1}
    _assert_listed_in_pipeline(inputs, expected)  # the same sources, the same first-listing-wins metas


def test_the_job_description_does_not_grow_with_the_manifest(tmp_path: Path) -> None:
    def description_bytes(rows: int) -> int:
        manifest = write_manifest(tmp_path / f"{rows:06d}" / "m.parquet", [{"uri": f"v/{n:07d}.mp4"} for n in range(rows)])
        p = beam.Pipeline(runner=FnApiRunner())
        build(p, check_inputs([str(manifest)]), str(tmp_path / "out"), Config.from_dict({}))
        return len(p.to_runner_api().SerializeToString())

    small, large = description_bytes(10), description_bytes(100_000)
    # Listed in the launcher, 100k sources made it about 3.2 MB larger; now only pickling noise differs.
    assert abs(large - small) < 1_000 and large < 1_000_000, (small, large)


def test_checking_an_input_does_not_read_a_manifest_whole(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", [{"uri": "a.mp4"}, {"label": "no uri"}])
    assert check_inputs([str(manifest)]) == [str(manifest)]  # the bad row 2 is a worker's to find
    good, bad = expand_inputs([str(manifest)])
    _assert_listed_in_pipeline([str(manifest)], [good, bad])  # the bad row is listed, with its error
    failed = curate_source(bad, Config(), str(tmp_path / "staging"), sandbox=None)  # nothing to decode
    assert failed.status == FAILED and failed.error_type == "input" and "row 2" in failed.error
