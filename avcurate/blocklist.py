"""Block lists: opt-outs and takedown requests, honoured on every run and across reruns.

A list names sources three ways, one entry per line of its file (or inline in the config):

- a URI, as the source is listed (a local path also matches in absolute form: a relative entry of a list file
  is taken from that file's folder, as a manifest's are, one inline in the config from the current folder;
  a name may hold '#' ("Talk #2.mp4"), but whitespace, '#', then whitespace or the line's end is taken for a
  comment after the entry and refused (it would name no file): list such a file by source id or sha256);
- a source id, as `avcurate.model.source_id_for` gives it (16 hex digits; the ledger's `source_id`);
- `sha256:<64 hex digits>`, the SHA-256 of the file's bytes (`sha256sum FILE`): it catches a copy under
  another name. Only when some list has such entries is every listed source read, once, to hash it.

Listed sources are split off right after listing (`avcurate.beam.blocklist`): never probed or decoded, recorded
in the ledger as `excluded`, `excluded_by` the list's name. An incremental rerun also takes a listed source's
clips out of the finished run it adds to (its shards, index and ledger).

Lists are not part of the config hash: they decide which sources are curated, not how their clips are made, so
a takedown can be applied to a finished dataset with `--incremental` and every other clip stays as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .config import BlockListConfig, ConfigError
from .fsutil import filesystems, is_local, read_bytes

URI = "uri"
SOURCE_ID = "source id"
SHA256 = "sha256"
SHA256_PREFIX = "sha256:"

_SOURCE_ID = re.compile(r"[0-9a-fA-F]{16}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # "md5:...", "C:...": a prefix that is no entry kind we know
_ENTRY_HELP = "an entry is a URI, a source id (16 hex digits) or sha256: then the 64 hex digits of the file's SHA-256"
_ONE_PER_LINE = "one entry per line, and comments on lines of their own, starting with #"
# "gs://b/a.mp4  # ticket 42" would name no file; '#' with no space after it ("Talk #2.mp4") stays a name's
_TRAILING_COMMENT = re.compile(r"\s#(\s|$)")


class BlockListError(ValueError):
    """One entry that is none of the kinds; the message says what to write instead."""


@dataclass(frozen=True)
class Match:
    """Why a source is excluded: which list, through which kind of entry."""

    list_name: str
    kind: str

    @property
    def reason(self) -> str:
        """The ledger's `error` sentence."""
        return f"excluded by block list '{self.list_name}' (its {self.kind} entry)"


@dataclass(frozen=True)
class Blocklist:
    """Every loaded list's entries by kind, each mapped to the first list that names it.

    Plain dicts of short strings: a list of 100k entries is a few MB, small enough to travel as an attribute of
    the DoFns that apply it (and to be read once, where the run starts: a local file need not be reachable
    from the workers)."""

    uris: dict[str, str] = field(default_factory=dict)
    source_ids: dict[str, str] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.uris or self.source_ids or self.sha256)

    @property
    def hashes_content(self) -> bool:
        """Whether sources must be read and hashed: only when some list has sha256 entries."""
        return bool(self.sha256)

    def match(self, uri: str, source_id: str) -> Match | None:
        """The entry naming the source by URI or source id, if any (no file is read)."""
        name = self.uris.get(uri) or self.uris.get(_local_form(uri) or uri)
        if name is not None:
            return Match(name, URI)
        name = self.source_ids.get(source_id)
        return Match(name, SOURCE_ID) if name is not None else None

    def match_content(self, sha256_hex: str) -> Match | None:
        name = self.sha256.get(sha256_hex)
        return Match(name, SHA256) if name is not None else None

    @property
    def digest(self) -> str:
        """Names the lists' content ("" for none), so an interrupted run resumes only with the same lists."""
        if not self:
            return ""
        canonical = json.dumps([sorted(entries.items()) for entries in (self.uris, self.source_ids, self.sha256)])
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def parse_entry(text: str) -> tuple[str, str]:
    """(kind, value) of one entry: URI, SOURCE_ID (lower case) or SHA256 (the lower-case hex digest)."""
    entry = text.strip()
    if not entry:
        raise BlockListError(f"an empty entry; {_ENTRY_HELP}")
    if entry.lower().startswith(SHA256_PREFIX):
        digest = entry[len(SHA256_PREFIX) :]
        if not _HEX64.fullmatch(digest):
            followed = _HEX64.fullmatch(digest.split()[0]) if digest.split() else None
            hint = _ONE_PER_LINE if followed else "write sha256: then the 64 hex digits `sha256sum FILE` prints"
            raise BlockListError(f"{entry!r} is not a sha256 entry: {hint}")
        return SHA256, digest.lower()
    if _SOURCE_ID.fullmatch(entry):
        return SOURCE_ID, entry.lower()
    first = entry.split()[0]
    if first != entry and _SOURCE_ID.fullmatch(first):  # "0123456789abcdef  # ticket 42" is no file name
        raise BlockListError(f"{entry!r}: {_ONE_PER_LINE}")
    if _TRAILING_COMMENT.search(entry):
        raise BlockListError(f"{entry!r}: {_ONE_PER_LINE} (a file whose name has ' # ' in it can be listed by its "
                             "source id or sha256)")  # fmt: skip
    scheme = _SCHEME.match(entry)
    if scheme and not entry[scheme.end() :].startswith("//"):
        raise BlockListError(f"{entry!r} starts with {scheme.group()!r}, which is no entry kind: {_ENTRY_HELP} (a URI "
                             "has scheme://, a local path may be written ./NAME)")  # fmt: skip
    return URI, entry



def load(lists: Sequence[BlockListConfig], files: Sequence[str] = ()) -> Blocklist:
    """The config's lists and the `--blocklist` files (each a list named after its file), read once each;
    ConfigError naming the list, the line and the fix for a bad entry, an unreadable file or a reused name."""
    every = [*lists, *(BlockListConfig(name=_name_of(path), file=path) for path in files)]
    names = [blocklist.name for blocklist in every]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"two block lists are named '{name}'; rename one (a --blocklist file's list is named "
                              "after the file, without its extension)")  # fmt: skip
    loaded = Blocklist()
    for blocklist in every:
        for kind, value in _entries(blocklist):
            by_kind = {URI: loaded.uris, SOURCE_ID: loaded.source_ids, SHA256: loaded.sha256}[kind]
            by_kind.setdefault(value, blocklist.name)
            local = _local_form(value) if kind == URI else None
            if local is not None:
                by_kind.setdefault(local, blocklist.name)
    return loaded


def _entries(blocklist: BlockListConfig) -> Iterable[tuple[str, str]]:
    for n, entry in enumerate(blocklist.entries):
        try:
            yield parse_entry(entry)
        except BlockListError as e:
            raise ConfigError(f"block list '{blocklist.name}' (entries[{n}]): {e}") from None
    if blocklist.file is None:
        return
    where = f"block list '{blocklist.name}' ({blocklist.file}"
    try:
        data = read_bytes(blocklist.file)
    except OSError as e:
        raise ConfigError(f"{where}): cannot read it ({e}); check the path") from None
    if data is None:
        raise ConfigError(f"{where}): no such file; check the path (a list file's own path starts from the current "
                          "folder)")  # fmt: skip
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}): not UTF-8 text ({e}); write one entry per line in UTF-8") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            kind, value = parse_entry(line)
        except BlockListError as e:
            raise ConfigError(f"{where}, line {number}): {e}") from None
        yield kind, _from_folder_of(blocklist.file, value) if kind == URI else value


def _from_folder_of(list_file: str, entry: str) -> str:
    """A list file's URI entry as a source is listed: a relative local path is taken from the list file's folder
    (as a manifest's relative entries are from the manifest's); any other entry stays as written."""
    if "://" in entry or entry.startswith(("file:", "~")) or os.path.isabs(entry):
        return entry
    if is_local(list_file):
        folder = os.path.dirname(os.path.abspath(os.path.expanduser(list_file.removeprefix("file://"))))
        return os.path.normpath(os.path.join(folder, entry))
    fs = filesystems()
    return fs.join(fs.split(list_file)[0], entry)


def _name_of(path: str) -> str:
    return os.path.splitext(posixpath.basename(path.rstrip("/")))[0]


def _local_form(uri: str) -> str | None:
    """A local path's absolute form (sources are listed so); None for a remote URI."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    return os.path.abspath(os.path.expanduser(uri.removeprefix("file://")))
