"""The model layer (avcurate/models/): tiny random checkpoints loaded through the libraries' real paths give the
bare libraries' embeddings; frames and audio are prepared as the models expect; missing models fail fast, saying
what to configure instead."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from huggingface_hub import constants as hub_constants
from PIL import Image
from skimage import data as skdata
from transformers import ClapModel, ClapProcessor

from avcurate.config import AudioModelConfig, VisualModelConfig
from avcurate.models import (
    ClapAudioModel,
    FramePrep,
    ModelCard,
    ModelUnavailable,
    OpenClipImageModel,
    autocast,
    limit_gpu_memory,
    resample_for_model,
    resolve_device,
)
from avcurate.models.testing import save_tiny_clap, save_tiny_openclip, save_tiny_openclip_checkpoint

CPU = torch.device("cpu")
PROMPTS = ["a photo of a cat.", "a photo of people talking.", "a photo of the sea."]
SOUNDS = ["the sound of a dog barking", "the sound of people talking", "the sound of rain"]
RATE = 48000


def photos() -> list[np.ndarray]:
    """Real, non-square RGB photographs: landscape (chelsea 300x451) and portrait (a 512x295 crop of the astronaut)."""
    return [skdata.chelsea(), skdata.astronaut()[:, 100:395], skdata.coffee()]


def noises() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(3 * RATE) / RATE
    return [
        (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),  # 3 s: repeat-padded to the window
        (0.1 * rng.standard_normal(7 * RATE)).astype(np.float32),
        (0.2 * rng.standard_normal(10 * RATE)).astype(np.float32),  # exactly one window
    ]


@pytest.fixture(scope="module")
def tiny_openclip_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_openclip(tmp_path_factory.mktemp("openclip"))


@pytest.fixture(scope="module")
def tiny_clap_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_clap(tmp_path_factory.mktemp("clap"))


@pytest.fixture(scope="module")
def clap(tiny_clap_dir: str) -> ClapAudioModel:
    return ClapAudioModel.load(AudioModelConfig(name=tiny_clap_dir), CPU, "amp")


@pytest.fixture
def offline_empty_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """HF_HUB_OFFLINE=1 and a Hugging Face cache with nothing in it, as on a worker nobody downloaded to."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # read from the environment at import only
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Offline mode NOT set, an empty cache, and a hub endpoint that refuses connections (a closed local port)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")


def library_image_embeddings(model: torch.nn.Module, preprocess, images: list[np.ndarray]) -> np.ndarray:
    """What an OpenCLIP user computes: PIL image -> the model's eval transform -> encode_image, normalised."""
    batch = torch.stack([preprocess(Image.fromarray(image)) for image in images])
    with torch.inference_mode():
        return model.encode_image(batch, normalize=True).numpy()


def library_text_embeddings(model: torch.nn.Module, tokenizer, texts: list[str]) -> np.ndarray:
    with torch.inference_mode():
        return model.encode_text(tokenizer(texts), normalize=True).numpy()


def assert_weights_from(model: torch.nn.Module, checkpoint: Path) -> None:
    """The loaded weights are the file's (not a random initialisation that happens to run)."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    loaded = model.state_dict()
    assert saved.keys() == loaded.keys()
    for key, value in saved.items():
        assert torch.equal(loaded[key].cpu(), value), key


# --- FramePrep ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [224, 64, 384])  # downscaling and (384 > 300) upscaling
def test_frame_prep_is_the_geometric_part_of_openclips_eval_transform(
    resize_mode: str, interpolation: str, size: int
) -> None:
    transform = open_clip.image_transform(
        size, is_train=False, resize_mode=resize_mode, interpolation=interpolation, fill_color=0
    )
    # open_clip's eval transform ends with MaybeConvertMode, MaybeToTensor and Normalize; the rest is geometry
    geometry = transform.transforms[:-3]
    assert all("Tensor" not in type(step).__name__ and "Normalize" not in type(step).__name__ for step in geometry)
    prep = FramePrep(image_size=size, interpolation=interpolation, resize_mode=resize_mode)
    for photo in photos():
        expected = np.asarray(open_clip.transform.Compose(geometry)(Image.fromarray(photo)))
        got = prep(photo)
        assert got.dtype == np.uint8 and got.shape == (size, size, 3)
        np.testing.assert_array_equal(got, expected)


def test_frame_prep_pickles_and_rejects_unknown_resize_modes() -> None:
    import pickle

    prep = FramePrep(image_size=224, interpolation="bicubic", resize_mode="longest")
    assert pickle.loads(pickle.dumps(prep)) == prep
    with pytest.raises(ValueError, match="resize_mode"):
        FramePrep(image_size=224, resize_mode="crop")


# --- OpenCLIP ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "amp"])  # amp is full precision on the cpu
def test_openclip_local_dir_embeds_as_the_bare_library(tiny_openclip_dir: str, precision: str) -> None:
    model = OpenClipImageModel.load(VisualModelConfig(name=tiny_openclip_dir), CPU, precision)
    folder = Path(tiny_openclip_dir.removeprefix("local-dir:"))
    assert_weights_from(model.model, folder / "open_clip_pytorch_model.bin")
    # the folder's preprocess config, not OpenCLIP's defaults
    assert model.prep == FramePrep(image_size=64, interpolation="bilinear", resize_mode="shortest")

    reference, _, preprocess = open_clip.create_model_and_transforms(tiny_openclip_dir)
    reference.eval()
    tokenizer = open_clip.get_tokenizer(tiny_openclip_dir)
    images = photos()

    frames = np.stack([model.prep(image) for image in images])
    got = model.embed_images(frames)
    assert got.dtype == np.float32 and got.shape == (len(images), 32)
    np.testing.assert_allclose(got, library_image_embeddings(reference, preprocess, images), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)

    texts = model.embed_texts(PROMPTS)
    assert texts.dtype == np.float32 and texts.shape == (len(PROMPTS), 32)
    np.testing.assert_allclose(texts, library_text_embeddings(reference, tokenizer, PROMPTS), atol=1e-5)

    assert model.logit_scale == pytest.approx(float(reference.logit_scale.detach().exp()))
    assert model.dim == 32
    assert model.card == ModelCard(
        role="visual",
        library="open_clip",
        library_version=open_clip.__version__,
        name=tiny_openclip_dir,
        pretrained=None,
        dim=32,
        input={"image_size": 64, "interpolation": "bilinear", "resize_mode": "shortest"},
    )
    assert model.card.to_dict()["input"]["image_size"] == 64


def test_openclip_architecture_and_checkpoint_file(tmp_path: Path) -> None:
    arch, checkpoint = save_tiny_openclip_checkpoint(tmp_path / "tiny.pt")
    model = OpenClipImageModel.load(VisualModelConfig(name=arch, pretrained=checkpoint), "cpu", "fp32")
    assert_weights_from(model.model, Path(checkpoint))
    assert model.card.name == arch and model.card.pretrained == checkpoint
    # an architecture with a file takes OpenCLIP's default preprocessing: OpenAI mean/std, bicubic
    assert model.prep == FramePrep(image_size=64, interpolation="bicubic", resize_mode="shortest")

    reference, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=checkpoint)
    reference.eval()
    images = photos()
    got = model.embed_images(np.stack([model.prep(image) for image in images]))
    np.testing.assert_allclose(got, library_image_embeddings(reference, preprocess, images), atol=1e-5)
    tokenizer = open_clip.get_tokenizer(arch)
    np.testing.assert_allclose(
        model.embed_texts(PROMPTS), library_text_embeddings(reference, tokenizer, PROMPTS), atol=1e-5
    )


def test_openclip_batches_give_the_same_embeddings_as_one_batch(tiny_openclip_dir: str) -> None:
    model = OpenClipImageModel.load(VisualModelConfig(name=tiny_openclip_dir, batch_size=2), CPU, "amp")
    frames = np.stack([model.prep(image) for image in photos() * 2])  # 6 frames: chunks of 2, 2, 2
    whole = model.embed_images(frames, batch_size=len(frames))
    np.testing.assert_allclose(model.embed_images(frames), whole, atol=1e-6)
    np.testing.assert_allclose(model.embed_images(frames, batch_size=4), whole, atol=1e-6)
    np.testing.assert_allclose(model.embed_texts(PROMPTS), model.embed_texts(PROMPTS, batch_size=3), atol=1e-6)
    assert model.embed_images(frames[:0]).shape == (0, 32)
    with pytest.raises(ValueError, match="64, 64, 3"):
        model.embed_images(np.zeros((1, 32, 32, 3), np.uint8))


# --- CLAP --------------------------------------------------------------------------------------------------------


def test_clap_folder_embeds_as_the_bare_library(tiny_clap_dir: str, clap: ClapAudioModel) -> None:
    reference = ClapModel.from_pretrained(tiny_clap_dir).eval()
    processor = ClapProcessor.from_pretrained(tiny_clap_dir)
    clips = noises()
    # transformers 5 refuses the `audios=` keyword of 4.x: it is `audio=` now
    inputs = processor(audio=clips, sampling_rate=RATE, return_tensors="pt")
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(reference.get_audio_features(**inputs).pooler_output, dim=-1)
    got = clap.embed_audio(clips)
    assert got.dtype == np.float32 and got.shape == (len(clips), 32)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)

    text_inputs = processor(text=SOUNDS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        text_expected = torch.nn.functional.normalize(reference.get_text_features(**text_inputs).pooler_output, dim=-1)
    np.testing.assert_allclose(clap.embed_texts(SOUNDS), text_expected.numpy(), atol=1e-5)

    # the temperature of logits_per_audio (audio against prompts), not the text one (20 in the tiny model)
    with torch.inference_mode():
        logits = reference(**inputs, input_ids=text_inputs["input_ids"], attention_mask=text_inputs["attention_mask"])
    similarity = got @ clap.embed_texts(SOUNDS).T
    np.testing.assert_allclose(logits.logits_per_audio.numpy(), clap.logit_scale * similarity, rtol=1e-4, atol=1e-4)
    assert clap.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)

    assert clap.sample_rate == 48000
    assert clap.card.to_dict() == {
        "role": "audio",
        "library": "transformers",
        "library_version": __import__("transformers").__version__,
        "name": tiny_clap_dir,
        "pretrained": None,
        "dim": 32,
        "input": {"sample_rate": 48000, "window_s": 10.0},
    }


def test_clap_batches_give_the_same_embeddings_as_one_batch(clap: ClapAudioModel) -> None:
    clips = noises()
    whole = clap.embed_audio(clips, batch_size=len(clips))
    np.testing.assert_allclose(clap.embed_audio(clips, batch_size=1), whole, atol=1e-6)
    np.testing.assert_allclose(clap.embed_audio(clips, batch_size=2), whole, atol=1e-6)
    np.testing.assert_allclose(clap.embed_texts(SOUNDS, batch_size=2), clap.embed_texts(SOUNDS), atol=1e-6)


def test_clap_embeds_a_long_clip_by_its_first_window_every_time(clap: ClapAudioModel) -> None:
    long_clip = (0.2 * np.random.default_rng(1).standard_normal(25 * RATE)).astype(np.float32)
    first_window = clap.embed_audio([long_clip[: 10 * RATE]])
    # the feature extractor alone would take a random 10 s crop (rand_trunc) of the 25 s
    for _ in range(3):
        np.testing.assert_array_equal(clap.embed_audio([long_clip]), first_window)


def test_resample_for_model_downmixes_and_keeps_a_tone_where_it_was() -> None:
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    stereo = np.stack([tone, 0.5 * tone])
    out = resample_for_model(stereo, 16000, 48000)
    assert out.dtype == np.float32 and out.shape == (48000,)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert np.argmax(spectrum) * 48000 / len(out) == pytest.approx(1000, abs=2)
    # the mean of the channels: 0.75 of the tone, away from the filter's edges
    assert np.max(np.abs(out[4800:-4800])) == pytest.approx(0.75, abs=0.01)
    mono = resample_for_model(tone, 16000, 16000)
    assert mono.dtype == np.float32 and np.array_equal(mono, tone)
    assert resample_for_model(stereo.astype(np.float64), 48000, 16000).shape == (16000 // 3 + 1,)


# --- the Hugging Face cache ---------------------------------------------------------------------------------------


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """Lays `folder`'s files out as huggingface_hub caches a download of `repo_id` (refs/main -> a snapshot)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)


def test_hub_names_load_from_the_cache_when_the_hub_is_unreachable(
    unreachable_hub: None, tiny_openclip_dir: str, tiny_clap_dir: str
) -> None:
    cache = Path(hub_constants.HF_HUB_CACHE)
    put_in_hub_cache(cache, "avcurate/tiny-openclip", Path(tiny_openclip_dir.removeprefix("local-dir:")))
    put_in_hub_cache(cache, "avcurate/tiny-clap", Path(tiny_clap_dir))
    start = time.monotonic()
    visual = OpenClipImageModel.load(VisualModelConfig(name="hf-hub:avcurate/tiny-openclip"), CPU, "amp")
    audio = ClapAudioModel.load(AudioModelConfig(name="avcurate/tiny-clap"), CPU, "amp")
    assert time.monotonic() - start < 10
    local = OpenClipImageModel.load(VisualModelConfig(name=tiny_openclip_dir), CPU, "amp")
    frames = np.stack([local.prep(image) for image in photos()])
    np.testing.assert_array_equal(visual.embed_images(frames), local.embed_images(frames))
    assert visual.prep == local.prep and visual.card.name == "hf-hub:avcurate/tiny-openclip"
    clap_from_folder = ClapAudioModel.load(AudioModelConfig(name=tiny_clap_dir), CPU, "amp")
    np.testing.assert_array_equal(audio.embed_audio(noises()), clap_from_folder.embed_audio(noises()))
    assert hub_constants.HF_HUB_OFFLINE is False


# --- unavailable models ------------------------------------------------------------------------------------------


def assert_fast_unavailable(load, *expected: str) -> str:
    start = time.monotonic()
    with pytest.raises(ModelUnavailable) as caught:
        load()
    assert time.monotonic() - start < 8, "no retries against an unreachable hub"
    message = str(caught.value)
    for part in expected:
        assert part in message, (part, message)
    return message


def test_an_uncached_pretrained_tag_offline_names_what_to_pass(offline_empty_cache: None) -> None:
    cfg = VisualModelConfig(name="ViT-B-32", pretrained="laion2b_s34b_b79k")
    assert_fast_unavailable(
        lambda: OpenClipImageModel.load(cfg, CPU, "amp"),
        "'ViT-B-32'",
        "laion2b_s34b_b79k",
        "offline",
        "models.visual.pretrained: /path/to/open_clip_pytorch_model.bin",
        "models.visual.name: local-dir:",
        "HF_HOME",
        "HF_TOKEN",
    )


def test_an_uncached_hub_model_without_offline_mode_fails_fast(unreachable_hub: None) -> None:
    # huggingface_hub alone retries each file 5 times (about 23 s a file) before giving up
    cfg = VisualModelConfig(name="hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    assert_fast_unavailable(lambda: OpenClipImageModel.load(cfg, CPU, "amp"), "offline", "local-dir:", "HF_HOME")
    assert hub_constants.HF_HUB_OFFLINE is False  # offline mode was for the load only
    assert_fast_unavailable(
        lambda: ClapAudioModel.load(AudioModelConfig(name="laion/clap-htsat-unfused"), CPU, "amp"),
        "offline",
        "models.audio.name: /path/to/folder saved with save_pretrained",
    )
    assert hub_constants.HF_HUB_OFFLINE is False


def test_a_missing_local_dir_names_what_to_pass(tmp_path: Path) -> None:
    cfg = VisualModelConfig(name=f"local-dir:{tmp_path / 'nowhere'}")
    message = assert_fast_unavailable(
        lambda: OpenClipImageModel.load(cfg, CPU, "amp"), "models.visual.name: local-dir:/path/to/folder"
    )
    assert "nowhere" in message and "offline" not in message


def test_a_local_dir_without_weights_is_not_a_random_model(tiny_openclip_dir: str, tmp_path: Path) -> None:
    config = Path(tiny_openclip_dir.removeprefix("local-dir:")) / "open_clip_config.json"
    (tmp_path / "open_clip_config.json").write_text(config.read_text())
    assert_fast_unavailable(
        lambda: OpenClipImageModel.load(VisualModelConfig(name=f"local-dir:{tmp_path}"), CPU, "amp"),
        "open_clip_pytorch_model.bin",
    )


def test_names_that_openclip_would_misread(tiny_openclip_dir: str) -> None:
    with_pretrained = VisualModelConfig(name=tiny_openclip_dir, pretrained="laion2b_s34b_b79k")
    assert_fast_unavailable(lambda: OpenClipImageModel.load(with_pretrained, CPU, "amp"), "is ignored")
    missing_file = VisualModelConfig(name="ViT-B-32", pretrained="/nowhere/open_clip_pytorch_model.bin")
    message = assert_fast_unavailable(
        lambda: OpenClipImageModel.load(missing_file, CPU, "amp"), "'/nowhere/open_clip_pytorch_model.bin' not found"
    )
    assert "offline" not in message
    without_weights = VisualModelConfig(name="ViT-B-32")
    assert_fast_unavailable(
        lambda: OpenClipImageModel.load(without_weights, CPU, "amp"), "models.visual.pretrained", "list_pretrained"
    )


def test_a_missing_clap_hub_name_offline_names_what_to_pass(offline_empty_cache: None) -> None:
    assert_fast_unavailable(
        lambda: ClapAudioModel.load(AudioModelConfig(name="laion/clap-htsat-unfused"), CPU, "amp"),
        "'laion/clap-htsat-unfused'",
        "offline",
        "models.audio.name: /path/to/folder saved with save_pretrained",
        "HF_HOME",
    )


def test_a_clap_folder_without_a_model_names_what_to_pass(tmp_path: Path) -> None:
    message = assert_fast_unavailable(
        lambda: ClapAudioModel.load(AudioModelConfig(name=str(tmp_path)), CPU, "amp"),
        "models.audio.name: /path/to/folder saved with save_pretrained",
    )
    assert "HF_HOME" not in message  # a folder never goes near the hub


# --- devices -----------------------------------------------------------------------------------------------------


def test_devices_and_precision_on_the_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == CPU
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with autocast(CPU, "amp"):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        with autocast(CPU, "fp16"):
            pass
    limit_gpu_memory(0.5, CPU)  # nothing to cap without cuda, and no error


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_amp_on_cuda_is_bfloat16(tiny_openclip_dir: str) -> None:
    cuda = torch.device("cuda")
    with autocast(cuda, "amp"):
        assert (torch.ones(2, 2, device=cuda) @ torch.ones(2, 2, device=cuda)).dtype == torch.bfloat16
    model = OpenClipImageModel.load(VisualModelConfig(name=tiny_openclip_dir), cuda, "amp")
    exact = OpenClipImageModel.load(VisualModelConfig(name=tiny_openclip_dir), CPU, "fp32")
    frames = np.stack([model.prep(image) for image in photos()])
    got = model.embed_images(frames)
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, exact.embed_images(frames), atol=3e-2)
