"""The whole curation pipeline translated into a Google Cloud Dataflow job, offline: nothing is submitted.

Beam's DataflowRunner with `--template_location` writes the job description (the request it would send to the
Dataflow service) to a local file instead of submitting it; with runner v2 the graph itself is the portable
pipeline proto (`pipeline.pb`) the job names by `pipelineUrl`, which the runner uploads to the staging
location. The test checks both: every transform of the pipeline we built is in the staged graph, our DoFns
unpickle from it, and the job carries the worker options a GPU run needs (image, runner v2, machine type,
workers, accelerator).

What is patched, and only that (the translation itself is Beam's, untouched):
- `DataflowApplicationClient.stage_file`, the upload: a gs:// destination goes to a local folder instead of
  Cloud Storage. Local destinations (the template file) go through Beam's own code.
- `GoogleCloudOptions._warn_if_soft_delete_policy_enabled`: it builds a Cloud Storage client with credentials
  to read the staging bucket's soft-delete policy, only to log a warning.
`--no_auth` keeps the Dataflow API client from looking for credentials. Tripwires fail the test if anything
still asks for credentials or opens a network connection.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.internal.gcp import auth
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions
from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.internal import apiclient
from apache_beam.utils import retry

from avcurate.beam.pipeline import build
from avcurate.beam.transforms import _CurateSourceFn
from avcurate.config import Config

IMAGE = "us-docker.pkg.dev/my-project/avcurate/avcurate:0.1.0"
BUCKET = "gs://avcurate-test-bucket"
ACCELERATOR = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
MACHINE, WORKERS, MAX_WORKERS, THREADS = "g2-standard-8", 2, 16, 4


class Tripped(retry.PermanentException):
    """Something reached for credentials or the network."""


@pytest.fixture
def offline_dataflow(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """Beam's Dataflow job creation with uploads to a local folder, no credential lookup, no network."""
    fake_gcs = tmp_path / "gcs"
    trips: dict[str, list[str]] = {"credentials": [], "network": []}
    stage_file = apiclient.DataflowApplicationClient.stage_file

    def local_upload(self: Any, gcs_or_local_path: str, file_name: str, stream: Any, *args: Any, **kwargs: Any) -> None:
        if gcs_or_local_path.startswith("gs://"):
            folder = fake_gcs / gcs_or_local_path.removeprefix("gs://")
            folder.mkdir(parents=True, exist_ok=True)
            gcs_or_local_path = str(folder)
        stage_file(self, gcs_or_local_path, file_name, stream, *args, **kwargs)

    # The tripwires raise what no retry loop retries (Beam's own retries skip a PermanentException, Google's
    # retry only network and server errors), so a change in Beam fails the test at once instead of after
    # minutes of backoff; they also record, in case something swallows the error.
    def no_credentials(pipeline_options: Any) -> None:
        trips["credentials"].append("asked for Google credentials")
        raise Tripped("something asked for Google credentials")

    def no_network(*args: Any, **kwargs: Any) -> None:
        trips["network"].append(repr(args[:2]))
        raise Tripped(f"a network lookup or connection: {args[:2]!r}")

    monkeypatch.setattr(apiclient.DataflowApplicationClient, "stage_file", local_upload)
    monkeypatch.setattr(GoogleCloudOptions, "_warn_if_soft_delete_policy_enabled", lambda self, arg_name: None)
    monkeypatch.setattr(auth._Credentials, "get_service_credentials", staticmethod(no_credentials))
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return {"gcs": fake_gcs, "trips": trips, "template": tmp_path / "job.json"}


def _options(template: Path) -> PipelineOptions:
    return PipelineOptions([
        "--runner=DataflowRunner", "--project=my-project", "--region=us-central1", "--job_name=avcurate-test",
        f"--temp_location={BUCKET}/tmp", f"--template_location={template}", "--no_auth",
        f"--sdk_container_image={IMAGE}", "--experiments=use_runner_v2",
        f"--machine_type={MACHINE}", f"--num_workers={WORKERS}", f"--max_num_workers={MAX_WORKERS}",
        f"--number_of_worker_harness_threads={THREADS}", f"--dataflow_service_options={ACCELERATOR}",
    ])  # fmt: skip


def _transforms(pipeline: beam.Pipeline) -> list[str]:
    """Full labels of every transform in the graph we built, composites included.

    Left out: composites that have no parts, i.e. that return their input unchanged (Beam's `Create` has one,
    `MaybeReshuffle`, for one-element inputs): they have nothing to run and Beam writes no transform for them."""
    labels: list[str] = []

    class Labels(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node: Any) -> None:
            if node.full_label and node.parts:
                labels.append(node.full_label)

        def visit_transform(self, node: Any) -> None:
            labels.append(node.full_label)

    pipeline.visit(Labels())
    return labels


def _translate(cfg: Config, offline: dict[str, Any], output: str = f"{BUCKET}/curated") -> dict[str, Any]:
    pipeline = beam.Pipeline(options=_options(offline["template"]))
    build(pipeline, [f"{BUCKET}/raw/", f"{BUCKET}/manifests/batch-1.csv"], output, cfg)
    expected = _transforms(pipeline)  # before running: the runner rewrites parts of the graph in place
    result = pipeline.run()
    assert result.wait_until_finish() == beam.runners.runner.PipelineState.DONE  # a template: nothing submitted
    assert offline["trips"] == {"credentials": [], "network": []}
    job = json.loads(offline["template"].read_text(encoding="utf-8"))
    url = job["environment"]["sdkPipelineOptions"]["options"]["pipelineUrl"]
    assert url.startswith(f"{BUCKET}/tmp/") and url.endswith("/pipeline.pb")
    staged = (offline["gcs"] / url.removeprefix("gs://")).read_bytes()
    return {"job": job, "proto": beam_runner_api_pb2.Pipeline.FromString(staged), "staged": staged,
            "expected": expected}  # fmt: skip


def _check_job(job: dict[str, Any], staged: bytes) -> None:
    assert job["name"] == "avcurate-test" and job["type"] == "JOB_TYPE_BATCH"
    env = job["environment"]
    assert env["version"]["job_type"] == "FNAPI_BATCH"  # the portable (Fn API) worker
    runner_v2 = {"use_runner_v2", "use_unified_worker", "use_portable_job_submission", "beam_fn_api"}
    assert runner_v2 <= set(env["experiments"])
    assert env["serviceOptions"] == [ACCELERATOR]
    (pool,) = env["workerPools"]
    assert pool["kind"] == "harness" and pool["machineType"] == MACHINE
    assert pool["numWorkers"] == WORKERS and pool["autoscalingSettings"]["maxNumWorkers"] == MAX_WORKERS
    assert pool["numThreadsPerWorker"] == THREADS
    assert pool["workerHarnessContainerImage"] == IMAGE
    assert [c["containerImage"] for c in pool["sdkHarnessContainerImages"]] == [IMAGE]
    options = env["sdkPipelineOptions"]["options"]
    assert options["sdk_container_image"] == IMAGE and options["dataflow_service_options"] == [ACCELERATOR]
    assert options["project"] == "my-project" and options["region"] == "us-central1"
    assert options["pipelineProtoHash"] == hashlib.sha256(staged).hexdigest()  # the graph the job names


def _check_graph(proto: beam_runner_api_pb2.Pipeline, expected: list[str], cfg: Config) -> None:
    transforms = proto.components.transforms
    names = {t.unique_name for t in transforms.values()}
    missing = [label for label in expected if label not in names]
    assert not missing, f"transforms of the built pipeline missing from the Dataflow graph: {missing}"
    for label in ("Inputs", "List", "Curate", "Curate/Curate", "Write", "Write/WriteShard", "Write/WriteIndex",
                  "Write/WriteLedger", "Write/Cleanup"):  # fmt: skip
        assert label in expected  # the expected list is the real graph, not an empty one
    # Every environment is the worker image: no transform falls back to Beam's default container.
    images = {
        env_id: beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
        for env_id, env in proto.components.environments.items()
    }
    assert set(images.values()) == {IMAGE}
    assert all(t.environment_id in images for t in transforms.values() if t.environment_id)
    # Our DoFns come back out of the graph as a worker reads them: the curation step with this run's config.
    dofns = {}
    for t in transforms.values():
        if t.spec.urn == common_urns.primitives.PAR_DO.urn:
            fn = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload).do_fn
            if fn.urn == python_urns.PICKLED_DOFN_INFO:
                dofns[t.unique_name] = pickler.loads(fn.payload)[0]
    curates = [fn for fn in dofns.values() if isinstance(fn, _CurateSourceFn)]
    assert len(curates) == 2  # sources, and spans of long ones
    for curate in curates:
        assert curate.cfg == cfg and curate.staging_dir == f"{BUCKET}/curated/_staging" and curate.parallel == 1


def test_default_pipeline_translates_to_a_dataflow_gpu_job(offline_dataflow: dict[str, Any]) -> None:
    cfg = Config.load(None)
    translated = _translate(cfg, offline_dataflow)
    _check_job(translated["job"], translated["staged"])
    _check_graph(translated["proto"], translated["expected"], cfg)


def test_learned_pipeline_translates_to_a_dataflow_gpu_job(offline_dataflow: dict[str, Any], tmp_path: Path) -> None:
    """With both embedding models configured (tiny local checkpoints): the graph gains the inference, scoring
    and near-duplicate transforms, all of which must reach the job."""
    from avcurate.models.testing import save_tiny_clap, save_tiny_openclip

    cfg = Config.from_dict({
        "models": {"device": "auto", "visual": {"name": save_tiny_openclip(tmp_path / "openclip")},
                   "audio": {"name": save_tiny_clap(tmp_path / "clap")}},
        "zero_shot": [{"name": "slides", "model": "visual", "prompts": ["a presentation slide"], "max": 0.5}],
        "dedup": {"embedding": "visual", "threshold": 0.95},
    })  # fmt: skip
    translated = _translate(cfg, offline_dataflow)
    _check_job(translated["job"], translated["staged"])
    _check_graph(translated["proto"], translated["expected"], cfg)
    for label in ("Curate/Learned/VisualEmbeddings", "Curate/Learned/AudioEmbeddings", "Curate/Learned/NearDuplicates",
                  "Curate/Regroup"):  # fmt: skip
        assert label in translated["expected"]
