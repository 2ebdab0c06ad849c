"""The committed output schemas (schemas/*.json) and validators against them.

The index and ledger files are generated from the Arrow schemas in avcurate.writers.tables:
`python -m avcurate.schemas` rewrites them, and a test fails while the committed files differ from the code.
The sample-metadata JSON Schema is written by hand. Older versions' files stay, so the validators take a
version to check data written before.
"""

from __future__ import annotations

import json
import re
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
    embedding_field,
)
from avcurate.writers.embeddings import RETRIEVAL_ROLES


def _schemas_dir() -> Path:
    """The copy a wheel ships inside the package, else `schemas/` of the source checkout (editable installs)."""
    here = Path(__file__).resolve().parent
    packaged = here / "schema_files"
    return packaged if packaged.is_dir() else here.parent / "schemas"


SCHEMAS_DIR = _schemas_dir()
SAMPLE_METADATA_VERSION = 5  # Clip.metadata()'s schema_version
SAMPLE_METADATA_FILE = f"sample-metadata.v{SAMPLE_METADATA_VERSION}.json"
INDEX_FILE = f"index.v{INDEX_SCHEMA_VERSION}.json"
DIM = "{dim}"  # in an optional field's type: any positive size, which the data decides
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


def describe_index() -> dict[str, Any]:
    """The index's fields, then its optional ones: an embedding column per retrieval role the run made."""
    doc = describe(INDEX_SCHEMA, "index")
    doc["optional_note"] = (
        "Optional fields are present only when the run made that embedding, after the fields, in this order;"
        f" {DIM} in a type is the model's embedding size."
    )
    doc["optional_fields"] = [_optional_embedding(role) for role in RETRIEVAL_ROLES]
    return doc


def _optional_embedding(role: str) -> dict[str, Any]:
    field = embedding_field(role, 1)
    return {"name": field.name, "type": str(field.type).removesuffix("[1]") + f"[{DIM}]", "nullable": field.nullable}


def generated() -> dict[str, dict[str, Any]]:
    """The Arrow-schema files as the code defines them, by file name."""
    return {INDEX_FILE: describe_index(), LEDGER_FILE: describe(LEDGER_SCHEMA, "ledger")}


def dump(doc: dict[str, Any]) -> str:
    """Pretty JSON with one line per field, so a schema change reads as a one-line diff."""
    lists = ("fields", "optional_fields")
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items() if k not in lists]
    for key in (k for k in lists if k in doc):
        fields = ",\n".join(f"    {json.dumps(f, ensure_ascii=False)}" for f in doc[key])
        lines.append(f"  {json.dumps(key)}: [\n{fields}\n  ]")
    return "{\n" + ",\n".join(lines) + "\n}\n"


@cache
def load(filename: str) -> dict[str, Any]:
    with open(SCHEMAS_DIR / filename, encoding="utf-8") as f:
        return json.load(f)


@cache
def _sample_validator(version: int) -> jsonschema.Draft202012Validator:
    schema = load(f"sample-metadata.v{version}.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_sample_metadata(meta: dict[str, Any], version: int = SAMPLE_METADATA_VERSION) -> None:
    """Raise jsonschema.ValidationError unless `meta` is a valid sample `json` member of that version."""
    _sample_validator(version).validate(meta)


def validate_index(table: pa.Table, version: int = INDEX_SCHEMA_VERSION) -> None:
    _validate_table(table, f"index.v{version}.json")


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
    optional = {f["name"]: f for f in expected.get("optional_fields", [])}
    got = {f["name"]: f for f in actual["fields"]}
    problems += [f"missing column {name!r}" for name in want if name not in got]
    problems += [f"unexpected column {name!r}" for name in got if name not in want and name not in optional]
    for name, field in got.items():
        documented = want.get(name) or optional.get(name)
        if documented is not None and not _field_matches(documented, field):
            problems.append(f"column {name!r} is {_field_text(field)}, expected {_field_text(documented)}")
    in_order = list(want) + [name for name in optional if name in got]
    if not problems and in_order != list(got):
        problems.append(f"columns out of order: {list(got)}")
    return sorted(problems)


def _field_matches(documented: dict[str, Any], field: dict[str, Any]) -> bool:
    """Equal, except that {dim} in the documented type stands for any positive size."""
    type_pattern = re.escape(documented["type"]).replace(re.escape(DIM), "[1-9][0-9]*")
    return documented["nullable"] == field["nullable"] and re.fullmatch(type_pattern, field["type"]) is not None


def _field_text(field: dict[str, Any]) -> str:
    return field["type"] + ("" if field["nullable"] else " not null")


def main() -> None:
    for filename, doc in generated().items():
        (SCHEMAS_DIR / filename).write_text(dump(doc), encoding="utf-8")
        print(f"wrote {SCHEMAS_DIR / filename}")


if __name__ == "__main__":
    main()
