"""Cameras: world (mm) → camera space → pixels.

Camera space follows Deep3D/OpenGL: x right, y up, the camera looks down −z, so a point in front
of it has z < 0 and depth d = −z (mm). Pixels: x right, y down, the centre of pixel (row i, col j)
at (x, y) = (j, i) — numpy's convention, used for every landmark and every rendered image.
Deep3D's camera (principal point 112 in a convention with pixel centres at +0.5) therefore sits at
111.5 here, which reproduces Deep3D's images exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PerspectiveCamera:
    """A pinhole camera.

    focal: focal length in pixels (same for x and y).
    cx, cy: principal point in pixels (pixel-centre-at-integer convention).
    width, height: image size in pixels.
    distance: position of the camera on the world's +z axis in mm; world → camera is a shift
        ``p_cam = p_world − (0, 0, distance)`` (no rotation: the face's pose carries the rotation).
    near: points closer than this depth (mm) are behind the image plane for rendering.
    """

    focal: float
    cx: float
    cy: float
    width: int
    height: int
    distance: float = 1000.0
    near: float = 1.0

    @staticmethod
    def deep3d(size: int = 224) -> PerspectiveCamera:
        """Deep3D's camera: fov 12.59° (focal 1015 px at 224 px), camera 10 dm = 1000 mm from the origin."""
        s = size / 224.0
        return PerspectiveCamera(focal=1015.0 * s, cx=112.0 * s - 0.5, cy=112.0 * s - 0.5,
                                 width=size, height=size, distance=1000.0)

    @staticmethod
    def from_fov(fov_deg: float, width: int, height: int, distance: float = 1000.0) -> PerspectiveCamera:
        """Camera with horizontal field of view `fov_deg`, principal point at the image centre."""
        focal = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
        return PerspectiveCamera(focal, (width - 1) / 2.0, (height - 1) / 2.0, width, height, distance)

    @property
    def fov_deg(self) -> float:
        return math.degrees(2 * math.atan((self.width / 2.0) / self.focal))

    def world_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 3) world mm -> (..., 3) camera space mm."""
        shift = torch.tensor([0.0, 0.0, self.distance], dtype=points.dtype, device=points.device)
        return points - shift

    def camera_to_screen(self, points_cam: torch.Tensor) -> torch.Tensor:
        """(..., 3) camera space -> (..., 3) screen: (x px, y px, depth mm > 0 in front)."""
        depth = -points_cam[..., 2]
        # Guard division only; callers cull triangles with depth < near.
        d = torch.where(depth.abs() < 1e-9, torch.full_like(depth, 1e-9), depth)
        x = self.cx + self.focal * points_cam[..., 0] / d
        y = self.cy - self.focal * points_cam[..., 1] / d
        return torch.stack([x, y, depth], dim=-1)

    def project(self, points_world: torch.Tensor) -> torch.Tensor:
        """(..., 3) world mm -> (..., 3) screen (x px, y px, depth mm)."""
        return self.camera_to_screen(self.world_to_camera(points_world))

    def unproject(self, xy: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Pixels (..., 2) and depth (...) mm -> world points (..., 3)."""
        x = (xy[..., 0] - self.cx) * depth / self.focal
        y = -(xy[..., 1] - self.cy) * depth / self.focal
        return torch.stack([x, y, self.distance - depth], dim=-1)

    def scaled(self, factor: float) -> PerspectiveCamera:
        """The same camera for an image resized by `factor` (pixel-centre convention preserved)."""
        return PerspectiveCamera(self.focal * factor, (self.cx + 0.5) * factor - 0.5, (self.cy + 0.5) * factor - 0.5,
                                 round(self.width * factor), round(self.height * factor), self.distance, self.near)
