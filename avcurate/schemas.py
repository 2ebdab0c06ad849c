"""The committed output schemas (schemas/*.json) and validators against them.

The index and ledger files are generated from the Arrow schemas in avcurate.writers.tables:
`python -m avcurate.schemas` rewrites them, and a test fails while the committed files differ from the code.
The sample-metadata JSON Schema is written by hand.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow as pa

from avcurate.writers.tables import (
    INDEX_SCHEMA,
    INDEX_SCHEMA_VERSION,
    LEDGER_SCHEMA,
    LEDGER_SCHEMA_VERSION,
    VERSION_KEY,
)


def _schemas_dir() -> Path:
    """The copy a wheel ships inside the package, else `schemas/` of the source checkout (editable installs)."""
    here = Path(__file__).resolve().parent
    packaged = here / "schema_files"
    return packaged if packaged.is_dir() else here.parent / "schemas"


SCHEMAS_DIR = _schemas_dir()
SAMPLE_METADATA_FILE = "sample-metadata.v3.json"
INDEX_FILE = f"index.v{INDEX_SCHEMA_VERSION}.json"
LEDGER_FILE = f"ledger.v{LEDGER_SCHEMA_VERSION}.json"


class SchemaMismatch(ValueError):
    """An Arrow table whose schema is not the committed one."""


def describe(schema: pa.Schema, name: str) -> dict[str, Any]:
    """An Arrow schema as plain JSON: its version (from the schema metadata) and each field's name, Arrow type
    string and nullability."""
    version = (schema.metadata or {}).get(VERSION_KEY.encode())
    return {
        "name": name,
        "schema_version": int(version) if version is not None else None,
        "fields": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema],
    }


def generated() -> dict[str, dict[str, Any]]:
    """The Arrow-schema files as the code defines them, by file name."""
    return {INDEX_FILE: describe(INDEX_SCHEMA, "index"), LEDGER_FILE: describe(LEDGER_SCHEMA, "ledger")}


def dump(doc: dict[str, Any]) -> str:
    """Pretty JSON with one line per field, so a schema change reads as a one-line diff."""
    head = {k: v for k, v in doc.items() if k != "fields"}
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    fields = [f"    {json.dumps(f, ensure_ascii=False)}" for f in doc["fields"]]
    return "{\n" + "\n".join(lines) + '\n  "fields": [\n' + ",\n".join(fields) + "\n  ]\n}\n"


@cache
def load(filename: str) -> dict[str, Any]:
    with open(SCHEMAS_DIR / filename, encoding="utf-8") as f:
        return json.load(f)


@cache
def _sample_validator() -> jsonschema.Draft202012Validator:
    schema = load(SAMPLE_METADATA_FILE)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_sample_metadata(meta: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless `meta` is a valid sample `json` member."""
    _sample_validator().validate(meta)


def validate_index(table: pa.Table) -> None:
    _validate_table(table, INDEX_FILE)


def validate_ledger(table: pa.Table) -> None:
    _validate_table(table, LEDGER_FILE)


def _validate_table(table: pa.Table, filename: str) -> None:
    expected = load(filename)
    actual = describe(table.schema, expected["name"])
    problems = _differences(expected, actual)
    if problems:
        raise SchemaMismatch(f"table does not match schemas/{filename}: " + "; ".join(problems))


def _differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    problems = []
    if actual["schema_version"] != expected["schema_version"]:
        problems.append(f"{VERSION_KEY} is {actual['schema_version']}, expected {expected['schema_version']}")
    want = {f["name"]: f for f in expected["fields"]}
    got = {f["name"]: f for f in actual["fields"]}
    problems += [f"missing column {name!r}" for name in want if name not in got]
    problems += [f"unexpected column {name!r}" for name in got if name not in want]
    for name in want.keys() & got.keys():
        if want[name] != got[name]:
            problems.append(f"column {name!r} is {_field_text(got[name])}, expected {_field_text(want[name])}")
    if not problems and list(want) != list(got):
        problems.append(f"columns out of order: {list(got)}")
    return sorted(problems)


def _field_text(field: dict[str, Any]) -> str:
    return field["type"] + ("" if field["nullable"] else " not null")


def main() -> None:
    for filename, doc in generated().items():
        (SCHEMAS_DIR / filename).write_text(dump(doc), encoding="utf-8")
        print(f"wrote {SCHEMAS_DIR / filename}")


if __name__ == "__main__":
    main()
