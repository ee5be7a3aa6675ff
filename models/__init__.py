"""Shared network blocks (one file per model family). Import from the submodules:

- ``unext``: UNeXt-small / paper widths with the SC-UNeXt flags (CBAM skips, SC skips, PFM).
- ``attention``: CBAM (channel + spatial attention), 2D and 3D.
- ``selective_scan``: selective scan (sequential, chunked, mamba_ssm on CUDA), Mamba block, CMU-Net MambaLayer.
- ``morphology``: learnable erosion / dilation, MA-DTNet's SMA and C-SMA.
- ``fusion``: SM-SAFE's modality stems, adaptive fusion (AMF), attentive structural encoder (ASE), SM-SAFE model.

This package imports only torch and MONAI, never other medrun folders.
"""

__version__ = "0.1.0"
