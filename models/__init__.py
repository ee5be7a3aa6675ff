"""Shared networks and blocks (one file per model family). Import from the submodules:

- ``adlite``: AD-Lite Net (ad-lite card).
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

This package imports only torch and MONAI, never other medrun folders.
"""
