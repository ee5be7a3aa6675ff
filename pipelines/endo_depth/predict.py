"""endo-depth predict: a depth map as a coloured point cloud (open3d), for inspection."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def point_cloud_ply(img: np.ndarray, depth: np.ndarray, focal: float) -> bytes:
    """Back-project every pixel with depth > 0 (pinhole, centre principal point) into a coloured open3d point cloud;
    the binary PLY's bytes (written by open3d into a temporary folder)."""
    import tempfile

    try:
        import open3d as o3d
    except ImportError as e:
        from medrun.errors import EnvError

        raise EnvError(f"open3d cannot be imported ({e})", fix="pip install open3d (and apt install libusb-1.0-0)") \
            from None
    h, w = depth.shape
    ys, xs = np.nonzero(depth > 0)
    z = depth[ys, xs].astype(np.float64)
    pts = np.stack([(xs - w / 2) * z / focal, (ys - h / 2) * z / focal, z], 1)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pc.colors = o3d.utility.Vector3dVector(img[ys, xs].astype(np.float64) / 255)
    with tempfile.TemporaryDirectory(prefix="medrun-ply-") as tmp:
        out = Path(tmp) / "cloud.ply"
        o3d.io.write_point_cloud(str(out), pc, write_ascii=False)
        return out.read_bytes()


