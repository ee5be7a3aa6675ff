"""counterfactual-ldm's typed manifest (pydantic only) and the data folders it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from medrun.manifests.schema import (
    BatchSize,
    Count,
    DatasetSection,
    Epochs,
    EvalSection,
    LearningRate,
    Manifest,
    NonNegFloat,
    NonNegInt,
    PositiveFloat,
    Section,
    Seed,
)


class Data(DatasetSection):
    name: Literal["isic2019"] = "isic2019"
    sources: list[tuple[str, str]] = Field(
        default_factory=lambda: [("ISIC_2019_Training_Input", "ISIC_2019_Training_GroundTruth.csv")],
        description="(images folder, labels CSV) pairs under root, one per ISIC year")
    splits: str | None = Field("splits.csv", description="image,split CSV under root (used when it exists)")
    concepts: str | None = Field("concepts.csv", description="image,<6 concepts> CSV under root (blank = unknown)")
    split_seed: Seed = 0
    train_fraction: float = Field(0.81, gt=0, lt=1, description="without splits.csv: stratified train share; "
                                                                 "the rest is halved into val and test")


class Classifier(Section):
    arch: Literal["resnet50", "resnet18"] = "resnet50"
    size: Count = Field(224, description="classifier input, pixels (square)")
    epochs: Epochs = 30
    batch_size: BatchSize = 32
    lr: LearningRate = 1e-4
    augment: bool = Field(True, description="random flips and 90° rotations")
    weights: str | None = Field(None, description="user weights (.safetensors / state-dict .pt) for f_φ")


class Concepts(Section):
    epochs: Epochs = 10
    batch_size: BatchSize = 32
    lr: LearningRate = 1e-4
    threshold: float = Field(0.5, gt=0, lt=1, description="p above which a concept enters a caption")


class Ldm(Section):
    sd_path: str | None = Field(None, description="local diffusers-format stable-diffusion-2-1 folder; "
                                                  "None: the tiny random-init configs of the card's CPU plan")
    size: Count = Field(512, description="LDM image size, pixels")
    steps: Count = Field(15000, description="UNet fine-tuning steps")
    lr: LearningRate = 1e-5
    batch_size: BatchSize = 8
    vae_steps: NonNegInt = Field(0, description="tiny configs only: steps that first train the random-init "
                                                "AutoencoderKL (SD's VAE is pretrained and frozen)")
    vae_lr: LearningRate = 1e-3
    unet_lr: LearningRate | None = Field(None, description="tiny configs: UNet lr (default lr)")
    lora_rank: NonNegInt = Field(0, description="> 0: LoRA on the UNet (peft) instead of full fine-tuning, "
                                                "a deviation from the paper flagged in outputs")


class Generate(Section):
    targets: Literal["all"] | list[str] = "all"
    guided_steps: Count = 10
    num_inference_steps: Count = 50
    lambda_c: NonNegFloat = 4.0
    conditional: bool = True
    finetuned: bool = Field(True, description="False: the LDM weights before fine-tuning (wo-ft)")
    scale_by_sigma: bool = False
    split: str = "train"
    subset: Count | None = Field(None, description="first N source images (the full set is GPU-days)")
    compare_lambda: list[NonNegFloat] = Field(default_factory=list,
                                              description="also run these λ_c on the same sources and seeds")
    grid: Count = Field(4, description="sources shown in the figures")


class Vae(Section):
    size: Count = 256
    channels: list[Count] = Field(default_factory=lambda: [64, 128, 256, 256, 512, 512])
    latent: Count = 128
    epochs: Epochs = 23
    batch_size: BatchSize = 128
    lr: LearningRate = 2.5e-5
    gamma: PositiveFloat = 0.95
    w_kld: NonNegFloat = 1e-3
    perceptual: bool = True
    vgg19_weights: str | None = Field(None, description="torchvision-named VGG19 weights for L_Perc")


class Discover(Section):
    values: list[float] = Field(default_factory=lambda: [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0])
    top_k: Count = 10
    split: str = "val"
    success_split: str = "test"
    max_images: Count | None = None
    batch_size: BatchSize = 64


class Eval(EvalSection):
    split: str = "test"
    pairs: list[tuple[str, str]] = Field(default_factory=lambda: [("MEL", "NV"), ("NV", "MEL")])
    inception_weights: str | None = Field(None, description="TorchScript Inception-v3 (2048-d pool features) for FID")


class Reproduce(Section):
    stages: list[str] = Field(default_factory=lambda: ["train-classifier", "train-concepts", "caption", "finetune-ldm",
                                                       "generate", "train-vae", "discover", "eval"])


class CounterfactualLdmManifest(Manifest):
    pipeline: Literal["counterfactual-ldm"] = "counterfactual-ldm"
    dataset: Data
    classifier: Classifier = Field(default_factory=Classifier)
    concepts: Concepts = Field(default_factory=Concepts)
    finetune_ldm: Ldm = Field(default_factory=Ldm)
    generate: Generate = Field(default_factory=Generate)
    vae: Vae = Field(default_factory=Vae)
    discover: Discover = Field(default_factory=Discover)
    eval: Eval = Field(default_factory=Eval)
    reproduce: Reproduce = Field(default_factory=Reproduce)


SD_LAYOUT = ("model_index.json, scheduler/scheduler_config.json, vae/ (config.json + weights), unet/ (config.json + "
             "weights), text_encoder/ (CLIPTextModel), tokenizer/ (vocab.json, merges.txt)")


def check_sd_folder(path: Path, size: int) -> dict:
    """Cheap checks of a diffusers SD folder before loading: the parts exist and their sizes agree. EnvError (4)."""
    import json

    from medrun.errors import EnvError

    if not path.is_dir():
        raise EnvError(f"Stable Diffusion folder not found: {path}", fix=f"a local diffusers folder holds {SD_LAYOUT}")
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if not (path / part).is_dir():
            raise EnvError(f"{path} has no {part}/ (not a diffusers-format Stable Diffusion folder)",
                           fix=f"point finetune_ldm.sd_path at a folder holding {SD_LAYOUT}")
    cfg = {}
    for part in ("unet", "vae", "text_encoder"):
        f = path / part / "config.json"
        try:
            cfg[part] = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            raise EnvError(f"cannot read {f}: {e}", fix=f"restore the folder ({SD_LAYOUT})") from None
    lat, unet_in = cfg["vae"].get("latent_channels"), cfg["unet"].get("in_channels")
    if lat != unet_in:
        raise EnvError(f"{path}: the VAE has {lat} latent channels but unet/ takes {unet_in}",
                       fix="use the unet/ and vae/ of one Stable Diffusion release")
    down = 2 ** (len(cfg["vae"].get("block_out_channels", ())) - 1)
    if size % down or size // down < 8:
        raise EnvError(f"{path}: finetune_ldm.size {size} is not a multiple of the VAE's {down}× downsampling",
                       fix=f"set finetune_ldm.size to a multiple of {down} (SD 2.1: 512 or 768)")
    hidden, cross = cfg["text_encoder"].get("hidden_size"), cfg["unet"].get("cross_attention_dim")
    if hidden != cross:
        raise EnvError(f"{path}: the text encoder's width {hidden} differs from unet/'s cross_attention_dim {cross}",
                       fix="use the text_encoder/ and unet/ of one Stable Diffusion release")
    return cfg


def data_paths(m: CounterfactualLdmManifest) -> dict[str, Path]:
    """The ISIC root (cheap layout check first) and, when given, the Stable Diffusion folder."""
    from medrun.datasets import isic2019

    root = Path(m.dataset.root)
    if root.exists():
        isic2019.check_layout(root, m.dataset.sources)
    if m.finetune_ldm.sd_path and Path(m.finetune_ldm.sd_path).expanduser().exists():  # missing: when loaded
        check_sd_folder(Path(m.finetune_ldm.sd_path).expanduser(), m.finetune_ldm.size)
    return {"isic": root}
