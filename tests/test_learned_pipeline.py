"""The learned stages end to end: small random OpenCLIP and CLAP models saved as local checkpoints, loaded
through the real loading path, run by the Beam pipeline on real photographs; outputs read back with
webdataset and pyarrow; the embeddings checked against the bare libraries on the same inputs."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds
import yaml
from PIL import Image
from skimage import data as photos

from avcurate.config import Config
from avcurate.decode import AlignedDecoder
from avcurate.dedup import exact_duplicates
from avcurate.faults import ENV as FAULTS
from avcurate.inputs import load_inputs
from avcurate.learned import prepare_learned
from avcurate.model import KEPT, REJECTED, Source
from avcurate.models.testing import save_tiny_clap, save_tiny_openclip
from avcurate.probe import open_container
from avcurate.process import process_source
from runs import assert_same_outputs

pytestmark = pytest.mark.slow

SLIDES = {"name": "slides", "model": "visual", "prompts": ["a presentation slide", "a page of text"], "max": 1.0}
MUSIC = {"name": "music_only", "model": "audio", "prompts": ["the sound of music."], "max": 1.0}


def _photo_video(folder: Path, name: str, shots: list[tuple[np.ndarray, float]]) -> Path:
    """Still photographs, 3 s each, with a tone per shot: hard cuts the shot detector finds."""
    args, chains = [], []
    for i, (image, freq) in enumerate(shots):
        png = folder / f"{name}-{i}.png"
        Image.fromarray(image).save(png)
        args += ["-loop", "1", "-t", "3", "-framerate", "25", "-i", str(png)]
        chains.append(f"[{i}:v]scale=384:288,setsar=1,format=yuv420p[v{i}]")
    tones = "+".join(f"sin(2*PI*{freq}*t)*between(t\\,{3 * i}\\,{3 * i + 3})" for i, (_, freq) in enumerate(shots))
    video = "".join(f"[v{i}]" for i in range(len(shots)))
    out = folder / f"{name}.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", *args, "-f", "lavfi", "-t", str(3 * len(shots)),
         "-i", f"aevalsrc=0.3*({tones}):s=16000",
         "-filter_complex", ";".join(chains) + f";{video}concat=n={len(shots)}:v=1:a=0[v]",
         "-map", "[v]", "-map", f"{len(shots)}:a", "-c:v", "libx264", "-g", "25", "-c:a", "aac", str(out)],
        check=True,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("learned")
    videos = root / "videos"
    videos.mkdir()
    cat, coffee, astronaut = photos.chelsea(), photos.coffee(), photos.astronaut()
    # A shot that comes back later in the same source, and a whole source copied under another name.
    _photo_video(videos, "repeat", [(cat, 440), (coffee, 880), (cat, 440)])
    shutil.copy(_photo_video(videos, "astronaut", [(astronaut, 330), (coffee, 660)]), videos / "astronaut-copy.mp4")
    config = {
        "filters": [],  # only the learned stages judge here
        "models": {
            "device": "cpu",
            "max_batch_clips": 3,  # several batches, mixing sources
            "visual": {"name": save_tiny_openclip(root / "openclip"), "frames_per_clip": 4, "per_frame": True,
                       "batch_size": 8},
            "audio": {"name": save_tiny_clap(root / "clap"), "batch_size": 2},
        },
        "zero_shot": [SLIDES, MUSIC],
        "dedup": {"embedding": "visual", "threshold": 0.999},
    }  # fmt: skip
    path = root / "learned.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    output = root / "out"
    done = subprocess.run(
        [sys.executable, "-m", "avcurate.cli", "run", "--config", str(path), "--input", str(videos),
         "--output", str(output), "--workers", "2", "--json"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "videos": videos, "config": path, "output": output, "summary": json.loads(done.stdout),
            "log": f"the first run:\n{done.stderr[-2000:]}"}


def test_outputs_carry_embeddings_scores_and_model_cards(setup: dict) -> None:
    output = setup["output"]
    index = pq.read_table(output / "index.parquet").to_pandas()
    assert len(index) == 7 and set(index["status"]) <= {KEPT, REJECTED}
    kept = index[index["status"] == KEPT]
    visual = np.stack(index["visual_embedding"].to_numpy())
    assert visual.shape == (7, 32) and np.allclose(np.linalg.norm(visual, axis=1), 1, atol=1e-5)
    assert np.stack(index["audio_embedding"].to_numpy()).shape[1] > 0
    assert index["av_correspondence"].between(0, 1).all()
    scores = [json.loads(z) for z in index["zero_shot"]]
    assert all(set(s) == {"slides", "music_only"} and 0 <= s["slides"] <= 1 for s in scores)
    cards = json.loads(index["models"].iloc[0])
    assert cards["visual"]["library"] == "open_clip" and cards["audio"]["library"] == "transformers"

    samples = list(wds.WebDataset(str(output / "shards" / "clips-000000.tar"), shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == sorted(kept["key"])
    for sample in samples:
        meta = json.loads(sample["json"])
        assert meta["schema_version"] == 5 and set(meta["models"]) == {"visual", "audio"}
        row = index[index["key"] == sample["__key__"]].iloc[0]
        vector = np.load(io.BytesIO(sample["visual.npy"]))
        assert np.array_equal(vector, np.asarray(row["visual_embedding"], np.float32))
        assert np.load(io.BytesIO(sample["visual_frames.npy"])).shape[1] == 32
        assert meta["zero_shot"] == json.loads(row["zero_shot"])
    retrieval = np.load(output / "embeddings" / "visual" / "clips-000000.npy")
    assert retrieval.dtype == np.float16
    assert np.allclose(retrieval, np.stack(kept.sort_values("key")["visual_embedding"].to_numpy()), atol=1e-3)


def test_rerun_with_other_batches_is_byte_identical(setup: dict, tmp_path: Path) -> None:
    """One worker instead of two: clips meet other clips in their batches, the bytes stay the same."""
    done = subprocess.run(
        [sys.executable, "-m", "avcurate.cli", "run", "--config", str(setup["config"]), "--input", str(setup["videos"]),
         "--output", str(tmp_path / "out"), "--workers", "1"], capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((setup["output"] / "embeddings").rglob("*.npy"))
    assert_same_outputs(setup["output"], tmp_path / "out", f"{setup['log']}\none worker:\n{done.stderr[-2000:]}")


def test_near_copies_are_rejected_naming_the_kept_clip(setup: dict) -> None:
    index = pq.read_table(setup["output"] / "index.parquet").to_pandas().sort_values("key")
    keys = list(index["key"])
    found = {k: d for k, d in zip(index["key"], index["duplicate_of"]) if isinstance(d, str)}
    exact = {key: of for key, of, _ in exact_duplicates(keys, np.stack(index["visual_embedding"].to_numpy()), 0.999)}
    assert found == exact  # the bucketed search finds what all-pairs finds
    by_name = {os.path.basename(uri): group for uri, group in index.groupby("source_uri")}
    original, copy = by_name["astronaut.mp4"], by_name["astronaut-copy.mp4"]
    # Of a clip and its copy in the other source, the one with the larger key names the other.
    for (_, a), (_, b) in zip(original.sort_values("start_s").iterrows(), copy.sort_values("start_s").iterrows()):
        first, second = sorted([a, b], key=lambda row: row["key"])
        assert second["duplicate_of"] == first["key"] or second["duplicate_of"] < first["key"]
    repeat = by_name["repeat.mp4"].sort_values("start_s")
    assert repeat.iloc[2]["duplicate_of"] == repeat.iloc[0]["key"]  # the cat shot, seen again in its own source
    rejected = index[index["duplicate_of"].notna()]
    assert all(r.startswith("near_duplicate: ") for reasons in rejected["reasons"] for r in reasons)
    assert (rejected["status"] == REJECTED).all() and rejected["shard"].isna().all()  # never in a shard
    ledger = pq.read_table(setup["output"] / "ledger.parquet").to_pandas()
    assert ledger["n_kept"].sum() == (index["status"] == KEPT).sum()


def test_pipeline_embeddings_equal_the_bare_libraries(setup: dict, tmp_path: Path) -> None:
    import open_clip
    from transformers import ClapModel, ClapProcessor

    cfg = Config.load(setup["config"])
    plan = prepare_learned(cfg)
    assert plan is not None
    video = setup["videos"] / "repeat.mp4"
    source = Source.from_uri(str(video))
    # The decoder's own code, in this process: the same inputs the sandboxed run handed over.
    result = process_source(source, cfg, str(tmp_path / "staging"), str(tmp_path), plan.spec, str(tmp_path / "in"))
    index = pq.read_table(setup["output"] / "index.parquet").to_pandas().set_index("key")
    model, _, preprocess = open_clip.create_model_and_transforms(cfg.models.visual.name)
    model.eval()
    clap = ClapModel.from_pretrained(cfg.models.audio.name).eval()
    processor = ClapProcessor.from_pretrained(cfg.models.audio.name)
    with open_container(str(video)) as container:
        frames = {f.index: f.video.to_ndarray(format="rgb24") for f in AlignedDecoder(container, cfg.decode)}
    for clip in result.clips:
        inputs = load_inputs(str(tmp_path / "in"), clip.key)
        shown = [frames[clip.clip_index + round(t * cfg.decode.fps)] for t in inputs.frame_times_s]
        with torch.no_grad():
            pixels = torch.stack([preprocess(Image.fromarray(rgb)) for rgb in shown])
            bare = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1).numpy()
            features = processor(audio=[inputs.audio], sampling_rate=plan.spec.audio_rate, return_tensors="pt")
            bare_audio = torch.nn.functional.normalize(clap.get_audio_features(**features).pooler_output, dim=-1)
        mean = bare.mean(axis=0)
        row = index.loc[clip.key]
        assert np.allclose(np.asarray(row["visual_embedding"]), mean / np.linalg.norm(mean), atol=1e-5)
        assert np.allclose(np.asarray(row["audio_embedding"]), bare_audio[0].numpy(), atol=1e-5)


def test_a_rule_on_learned_scores_rejects_after_inference(setup: dict, tmp_path: Path) -> None:
    config = yaml.safe_load(setup["config"].read_text())
    config["zero_shot"] = [{**SLIDES, "max": 0.0}]  # every clip shows some slide: all rejected, with the score
    config["dedup"] = {"embedding": None}
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "avcurate.cli", "run", "--config", str(path), "--input", str(setup["videos"] / "repeat.mp4"),
         "--output", str(tmp_path / "out"), "--json"], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    index = pq.read_table(tmp_path / "out" / "index.parquet").to_pandas()
    assert (index["status"] == REJECTED).all() and len(index) == 3
    assert all(reasons[0].startswith("slides: ") and "> max 0" in reasons[0] for reasons in index["reasons"])
    assert not list((tmp_path / "out" / "shards").glob("*.tar"))
    counters = json.loads(done.stdout)["counters"]
    assert counters["clips_kept"] == 0 and counters["rejected_slides"] == 3


def test_a_model_without_weights_stops_the_run_before_decoding(setup: dict, tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump({"models": {"visual": {"name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}}}))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "avcurate.cli", "run", "--config", str(path), "--input", str(setup["videos"]),
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "ViT-B-32" in done.stderr and "models.visual.pretrained: /path/to" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing decoded, nothing written
    assert time.monotonic() - started < 120


def test_learned_stages_on_a_dask_cluster_write_the_same_bytes(setup: dict, tmp_path: Path) -> None:
    """RunInference and the near-duplicate search through avcurate's DaskRunner: batches, model loading once per
    worker process, side inputs (the k-means centroids) computed once."""
    done = subprocess.run(
        [sys.executable, "-m", "avcurate.cli", "run", "--config", str(setup["config"]), "--input", str(setup["videos"]),
         "--output", str(tmp_path / "out"), "--runner", "dask", "--workers", "2"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_outputs(setup["output"], tmp_path / "out", f"{setup['log']}\non Dask:\n{done.stderr[-2000:]}")


def test_a_run_killed_while_embedding_resumes_without_embedding_again(setup: dict, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "avcurate.cli", "run", "--config", str(setup["config"]), "--input",
               str(setup["videos"]), "--output", str(tmp_path / "out"), "--workers", "2", "--json"]  # fmt: skip
    env = {**os.environ, FAULTS: json.dumps([{"at": "embedded", "do": "kill-run", "after": 3}])}
    killed = subprocess.run(command, env=env, start_new_session=True, capture_output=True, timeout=900)
    assert killed.returncode == -signal.SIGKILL
    staging = tmp_path / "out" / "_staging"
    embedded = sorted(p.stem for p in (staging / "_embedded").glob("*.npz"))
    decoded = list((staging / "_done").glob("*.json"))
    assert len(embedded) == 3 and decoded
    # Embedded clips gave their model inputs back; the others' wait for the rerun.
    assert not [p for p in (staging / "_inputs").glob("*.npy") if p.name.split(".")[0] in embedded]
    assert list((staging / "_inputs").glob("*.npy"))

    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["counters"]["resumed"] == len(decoded)  # decoded sources were not decoded again
    assert_same_outputs(setup["output"], tmp_path / "out", f"{setup['log']}\nresumed:\n{done.stderr[-2000:]}")
