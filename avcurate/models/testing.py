"""Tiny, randomly initialised models saved as real local checkpoints, for tests and the demo (no download).

They go through the libraries' own constructors and loaders, so everything but the weights' quality is real:
configs, checkpoint formats, tokenizers, OpenCLIP's preprocess config and CLAP's 48 kHz feature extractor.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

TINY_OPENCLIP_ARCH = "avcurate-tiny-ViT"
TINY_OPENCLIP_MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 32},
    # the real vocabulary and context, so OpenCLIP's bundled SimpleTokenizer fits it
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
# Not OpenCLIP's defaults (OpenAI mean/std, bicubic), so a test notices when the model's own ones are not used.
TINY_OPENCLIP_PREPROCESS_CFG = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear"}

# Words the tiny CLAP tokenizer is trained on: the prompts tests and the demo use, and their vocabulary.
TINY_CLAP_WORDS = (
    "the sound of a dog barking a cat people talking a man speaking a woman crowd children playing singing music "
    "guitar piano drums an orchestra applause laughter birds horse engine car motorcycle train airplane "
    "helicopter traffic siren rain wind sea waterfall fire typing on keyboard tools and machinery cooking "
    "footsteps video game silence speech noise tone beep hum click photo of"
)


def save_tiny_openclip(folder: str | Path) -> str:
    """An OpenCLIP local-dir checkpoint; returns the models.visual.name that loads it ("local-dir:<folder>")."""
    import open_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": TINY_OPENCLIP_MODEL_CFG, "preprocess_cfg": TINY_OPENCLIP_PREPROCESS_CFG}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    name = f"local-dir:{folder}"
    torch.manual_seed(0)
    model = open_clip.create_model(name)  # random weights: the folder has none yet
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return name


def save_tiny_openclip_checkpoint(path: str | Path) -> tuple[str, str]:
    """Registers the tiny architecture with OpenCLIP (this process only) and saves a state dict at `path`.

    Returns (models.visual.name, models.visual.pretrained) for the "architecture + checkpoint file" form.
    """
    import open_clip

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config_file = path.parent / f"{TINY_OPENCLIP_ARCH}.json"  # OpenCLIP names a registered config by its file
    config_file.write_text(json.dumps(TINY_OPENCLIP_MODEL_CFG, indent=2), encoding="utf-8")
    open_clip.add_model_config(config_file)
    torch.manual_seed(1)
    model = open_clip.create_model(TINY_OPENCLIP_ARCH)
    torch.save(model.state_dict(), path)
    return TINY_OPENCLIP_ARCH, str(path)


def save_tiny_clap(folder: str | Path) -> str:
    """A CLAP folder saved with save_pretrained (model, feature extractor, tokenizer); returns models.audio.name."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's, in its order: <pad> is 1 as in its config
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([TINY_CLAP_WORDS] * 4, vocab_size=400, min_frequency=1, special_tokens=special)
    trained = json.loads(bpe.to_str())["model"]
    vocab = trained["vocab"]
    merges = [tuple(pair) for pair in trained["merges"]]
    tokenizer = RobertaTokenizerFast(vocab=vocab, merges=merges, model_max_length=77)
    # laion/clap-htsat-unfused's extractor settings: 48 kHz, 64 mel bins, 50 Hz..14 kHz, rand_trunc + repeatpad
    feature_extractor = ClapFeatureExtractor(frequency_min=50, frequency_max=14000, truncation="rand_trunc")
    config = ClapConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 80,
        },
        audio_config={
            "patch_embeds_hidden_size": 16,
            "depths": [1, 1],
            "num_attention_heads": [2, 2],
            "hidden_size": 32,  # patch_embeds_hidden_size doubled per stage after the first
        },
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = ClapModel(config)
    with torch.no_grad():  # distinct audio and text temperatures (both start at 1/0.07), so tests tell them apart
        model.logit_scale_t.fill_(math.log(20.0))
    model.save_pretrained(folder)
    ClapProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)
