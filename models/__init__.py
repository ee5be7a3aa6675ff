"""Shared networks and blocks (one file per model family). Import from the submodules:

- ``adlite``: AD-Lite Net (ad-lite card).
- ``alexnet_hash``: AlexNet deep-hashing network with a multi-label head (hamming-retrieval card).
- ``hybridnet``: HybridNet (CNN encoder, transformer bottleneck with metadata fusion, HoVer-Net heads) and the
  SwinUNETR preset with the same heads (hybrid-seg card).
- ``sam``, ``sam_lora``, ``sam3d``: Segment Anything ViT-B (official checkpoint loading), its LoRA adaptation
  (lorasam card), and the SAM-Med3D ``vit_b_ori`` layout (totalct-sam card).
- ``unext``: UNeXt-small / paper widths with the SC-UNeXt flags (CBAM skips, SC skips, PFM).
- ``attention``: CBAM (channel + spatial attention), 2D and 3D.
- ``selective_scan``: selective scan (sequential, chunked, vectorised "ssd", mamba_ssm on CUDA), Mamba block,
  CMU-Net MambaLayer.
- ``cmunet``: CMU-Net and its ablation variants (plain U-Net, U-Net + Mamba, U-Net + CBAM), nnU-Net style, 2D.
- ``morphology``: learnable erosion / dilation, MA-DTNet's SMA and C-SMA.
- ``fusion``: SM-SAFE's modality stems, adaptive fusion (AMF), attentive structural encoder (ASE), SM-SAFE model.
- ``fusion_hierarchical``: SM-SAFE with a second AMF at half resolution added at U-Net level 2 (``--amf-levels 2``).
- ``flowsets``: flow-cytometry event-set networks: MLP, PointNet, Set Transformer variants, GNNs, GIN/GAT-ST-FPS
  (mrd-flow card).
- ``seanet``: SEANet (CTformer + Spectral Residual Units), CTformer, RED-CNN and SEANet² (RED-CNN + SRU) for 2D
  LDCT denoising; FFC/LaMa Fourier units (seanet card).
- ``dense_unet3d``: the residual 3D U-Net with self-attention bottom and attention up-blocks of the two-teachers
  paper (dense-unet-teachers card).
- ``tabddpm``: TabDDPM's MLP denoiser (timestep + class embeddings) for numerical tables (sepsis-synth card).
- ``transnet_oct``: TransNetOCT (ResNet-50 + transformer bottleneck + 3D head) and its UNet/FPN baselines with the
  same 2.5D input and 3D head (transnet-oct card).
- ``cnn_baselines``, ``mobilenet_v2``, ``vgg``, ``xception``: ImageNet-style CNN baselines (MONAI DenseNet-121,
  MobileNet-V2, VGG-16, Xception) with raw-pixel input scaling, built offline (ad-lite card, Table 1).
- ``single_task_cnn``: one stream of the cross-stitch model with one task head (epilepsy-mtl card, Table 2).
- ``ea_unet``: EA-U-Net, the two-branch (CT + vessel prior) edge-aware 3D U-Net (pulmonary-av card).
- ``inception_v3``, ``medvit``: Inception-V3 (torchvision's layout) and MedViT-S, targets of the cycleadvgan card.
- ``ct_baselines``: UNETR and SwinUNETR (MONAI) as prompt-free 3D CT segmenters (totalct-sam card, Table 1).
- ``brainnetcnn``, ``fbnetgen``, ``bnt``: BrainNetCNN, FBNETGEN and the Brain Network Transformer, the
  connectivity baselines of the asd-transformer card (Table 1).
- ``dvtwin``: DVTwin, siamese post-norm ViT encoder + gated stereo fusion + U-Net-style disparity decoder
  (endo-depth card).

This package imports torch, MONAI and the libraries a network needs (diffusers, PyTorch Geometric, scipy), never
other medrun folders.
"""

# -- registry (timm-style): ``create(name, **kw)`` builds a network by name --------------------------------------
# Names map to "module:callable" so that listing or resolving a name imports nothing; ``create`` imports the one
# module it needs. ``register`` adds a callable at run time (a user's own network, a test).
_MODELS: dict[str, str] = {
    "adlite": "adlite:AdLiteNet",
    "adxpro": "adxpro:ADxPro",
    "grud": "grud:GRUD",
    "minimalrnn": "minimalrnn:MinimalRNN",
    "alexnet-hash": "alexnet_hash:AlexNetHash",
    "asd-transformer": "asd_transformer:AsdTransformer",
    "attack-target": "attack_targets:build",
    "bnt": "bnt:BNT",
    "brainnetcnn": "brainnetcnn:BrainNetCNN",
    "camnet-densenet169": "camnet:densenet169",
    "camnet-tiny": "camnet:tiny_cnn",
    "cdct-vae": "cdct:ConceptVAE",
    "cmunet": "cmunet:CMUNet",
    "cnn-baseline": "cnn_baselines:build",
    "corner-regressor": "corner_regressor:CornerRegressor",
    "corner-regressor-b4": "corner_regressor:corner_regressor_b4",
    "crnn-tiny": "crnn:CRNN",
    "crossstitch": "crossstitch:CrossStitchNet",
    "cyclegan": "cyclegan:CycleGAN",
    "dense-unet3d": "dense_unet3d:DenseUNet3D",
    "densenet121": "cnn_baselines:densenet121",
    "drivpocket": "drivpocket:DRIVPocket",
    "duat": "duat:DuAT",
    "dvtwin": "dvtwin:DVTwin",
    "ea-unet": "ea_unet:EAUNet",
    "fbnetgen": "fbnetgen:FBNETGEN",
    "hybridnet": "hybridnet:HybridNet",
    "hybridnet-swin": "hybridnet:SwinHeads",
    "hybridnet-tiny": "hybridnet:hybridnet_tiny",
    "idqce": "idqce:IDQCE",
    "inception-v3": "inception_v3:InceptionV3",
    "idqce-vqvae": "idqce:VQVAE",
    "lrp-segmenter": "lrp_unet:Segmenter",
    "madtnet": "madtnet:DualTaskNet",
    "mcgan-attention-unet": "mcgan:AttentionUNet",
    "medvit-s": "medvit:medvit_s",
    "mobilenet-v2": "mobilenet_v2:MobileNetV2",
    "mrd-flow": "flowsets:FlowNet",
    "sam-vit-b": "sam:build_sam_vit_b",
    "sam3d-vit-b-ori": "sam3d:build_sam3d_vit_b_ori",
    "totalct-swinunetr": "ct_baselines:swinunetr",
    "totalct-unetr": "ct_baselines:unetr",
    "seanet": "seanet:seanet",
    "seanet-ctformer": "seanet:ctformer",
    "seanet-redcnn": "seanet:redcnn",
    "seanet2": "seanet:seanet2",
    "single-task-cnn": "single_task_cnn:SingleTaskCNN",
    "smsafe": "fusion:SMSAFE",
    "smsafe-hierarchical": "fusion_hierarchical:SMSAFEHierarchical",
    "tabddpm-mlp": "tabddpm:MLPDiffusion",
    "transnet-oct": "transnet_oct:TransNetOCT",
    "transnet-oct-fpn": "transnet_oct:FPN25D",
    "transnet-oct-unet": "transnet_oct:UNet25D",
    "unet-classic": "unet_classic:ClassicUNet",
    "unext": "unext:UNeXt",
    "unext-paper": "unext:unext_paper",
    "unext-small": "unext:unext_small",
    "vgg16": "vgg:VGG16",
    "xception": "xception:Xception",
}
_RUNTIME: dict = {}


def register(name: str):
    """Decorator: ``@register("my-net")`` on a class or factory makes ``create("my-net", **kw)`` build it."""

    def deco(fn):
        _RUNTIME[name] = fn
        return fn

    return deco


def names() -> list[str]:
    return sorted({*_MODELS, *_RUNTIME})


def resolve(name: str):
    """The class or factory registered under ``name`` (imports its module)."""
    import importlib

    if name in _RUNTIME:
        return _RUNTIME[name]
    if name not in _MODELS:
        import difflib

        near = difflib.get_close_matches(name, names(), n=1)
        raise KeyError(f"unknown model '{name}'" + (f" (did you mean '{near[0]}'?)" if near else "")
                       + f"; known: {', '.join(names())}")
    module, attr = _MODELS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


def create(name: str, **kwargs):
    """Build the network registered as ``name`` with ``kwargs`` (the model's constructor arguments)."""
    return resolve(name)(**kwargs)
