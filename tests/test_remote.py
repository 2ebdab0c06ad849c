"""Inputs and outputs on object storage: the whole pipeline against an S3 server (moto's, on localhost).

The S3 endpoint and keys are given as a user gives them, as Beam pipeline options on the command line; they
must reach every process that touches storage: the CLI listing the inputs, the sandboxed decoders reading
them, and the Beam workers writing shards, index and ledger. The loader then trains from the bucket.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import yaml
from moto.server import ThreadedMotoServer

from avcurate.model import FAILED, KEPT
from avcurate.sample import SampleSet
from avcurate.schemas import validate_index, validate_ledger, validate_sample_metadata

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "pipelines" / "configs" / "demo.yaml"
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def bucket_client(endpoint: str):  # noqa: ANN201 - boto3 clients have no importable type
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1")  # fmt: skip


@pytest.fixture(scope="module")
def remote_run(sample_set: SampleSet, endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list]:
    # The demo's settings, with its short probe deadline (there for the FIFO, which is not uploaded) relaxed:
    # a busy test machine and a Python S3 server are slow, and this test is about storage, not deadlines.
    settings = yaml.safe_load(CONFIG.read_text())
    settings["decode"].update(probe_timeout_s=60, timeout_s=120)
    config = tmp_path_factory.mktemp("remote") / "remote.yaml"
    config.write_text(yaml.safe_dump(settings))
    s3 = bucket_client(endpoint)
    s3.create_bucket(Bucket="raw")
    uploaded = [f for f in sample_set.files if f.path.is_file()]  # the FIFO cannot be uploaded
    for sample in uploaded:
        s3.upload_file(str(sample.path), "raw", f"videos/{sample.name}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = subprocess.run(
        [sys.executable, "-m", "avcurate.cli", "run", "--config", str(config), "--json",
         "--input", "s3://raw/videos/", "--output", "s3://raw/curated/",
         f"--s3_endpoint_url={endpoint}", "--s3_access_key_id=testing", "--s3_secret_access_key=testing",
         "--s3_region_name=us-east-1"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), uploaded


def read_object(endpoint: str, key: str) -> bytes:
    return bucket_client(endpoint).get_object(Bucket="raw", Key=key)["Body"].read()


def test_a_run_from_and_to_s3_accounts_for_every_input(remote_run, endpoint: str) -> None:
    summary, uploaded = remote_run
    ledger_table = pq.read_table(io.BytesIO(read_object(endpoint, "curated/ledger.parquet")))
    validate_ledger(ledger_table)
    ledger = ledger_table.to_pandas()
    assert len(ledger) == len(uploaded) == summary["inputs"]
    by_name = {uri.rsplit("/", 1)[1]: row for uri, row in zip(ledger["uri"], ledger.to_dict("records"))}
    for sample in uploaded:
        row = by_name[sample.name]
        assert row["uri"] == f"s3://raw/videos/{sample.name}"
        assert row["status"] == sample.expect, (sample.key, row["status"], row["error"])
        if sample.expect == FAILED:
            assert row["error_type"] == sample.error_type, (sample.key, row["error"])


def test_shards_and_index_land_in_the_bucket_and_agree(remote_run, endpoint: str, tmp_path: Path) -> None:
    summary, _ = remote_run
    listing = bucket_client(endpoint).list_objects_v2(Bucket="raw", Prefix="curated/")["Contents"]
    names = sorted(o["Key"] for o in listing)
    shards = [n for n in names if n.startswith("curated/shards/")]
    assert len(shards) == summary["shards"] >= 2
    previews = [n for n in names if n.startswith("curated/report_files/")]  # the run's report, beside the page
    assert previews
    written = ["curated/index.parquet", "curated/ledger.parquet", "curated/run.json", "curated/report.html", *previews,
               *shards]  # fmt: skip
    assert names == sorted(written)  # no staging, no temp
    record = json.loads(read_object(endpoint, "curated/run.json"))  # shared with the data: never the keys
    assert "--s3_secret_access_key=***" in record["command"] and "=testing" not in record["command"]
    assert b"testing" not in read_object(endpoint, "curated/report.html")
    index_table = pq.read_table(io.BytesIO(read_object(endpoint, "curated/index.parquet")))
    validate_index(index_table)
    index = index_table.to_pandas()
    seen = {}
    for name in shards:
        local = tmp_path / name.rsplit("/", 1)[1]
        local.write_bytes(read_object(endpoint, name))
        for sample in wds.WebDataset(str(local), shardshuffle=False):
            meta = json.loads(sample["json"])
            validate_sample_metadata(meta)
            assert meta["source_uri"].startswith("s3://raw/videos/") and sample["mp4"][4:8] == b"ftyp"
            seen[meta["key"]] = meta["shard"]
    kept = index[index["status"] == KEPT]
    assert seen == dict(zip(kept["key"], kept["shard"])) and len(seen) == summary["clips_kept"]


def test_the_loader_trains_from_the_bucket(remote_run, endpoint: str) -> None:
    summary, _ = remote_run
    count = summary["shards"]
    url = f"s3://raw/curated/shards/clips-{{000000..{count - 1:06d}}}.tar"
    probe = (
        "import sys, json\n"
        "from avcurate.loader import AVClipDataset\n"
        "samples = list(AVClipDataset(sys.argv[1], shuffle_shards=False))\n"
        "print(json.dumps([[s['key'], list(s['video'].shape), list(s['audio'].shape)] for s in samples]))\n"
    )
    options = {"s3_endpoint_url": endpoint, "s3_access_key_id": "testing", "s3_secret_access_key": "testing",
               "s3_region_name": "us-east-1"}  # fmt: skip
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
           "AVCURATE_FILESYSTEM_OPTIONS": json.dumps(options)}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe, url], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    samples = json.loads(done.stdout)
    assert len(samples) == summary["clips_kept"]
    assert Counter(len(shape) for _, shape, _ in samples) == {4: len(samples)}  # [T, C, H, W] each
    for _, video, audio in samples:
        assert audio[1] == round(video[0] / 25 * 16000)  # the two streams cover the same span
