"""`Reconstruction`: what every reconstruction method returns for one face, whatever it is.

A method may be a morphable-model fit (parameters, mesh in the model's topology), a network that
outputs a mesh directly (in the model's topology, or its own with a vertex correspondence), or a
volume meshed afterwards. So the mesh, landmarks, pose and cameras are always there; `params` only
when the method has model parameters. `save()` writes every output format through the exporter
registry (`facerecon.io.export`), rendering the images those formats need with `facerecon.render`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..align import Crop
from ..detect.base import Face
from ..geometry.camera import PerspectiveCamera
from ..geometry.mesh import vertex_normals
from ..geometry.rotations import euler_to_matrix
from ..io import export as exporters
from ..models import FaceGeometry, FaceParams, MorphableModel, ParamLayout
from ..models.annotations import PART_NAMES, FaceAnnotations, annotations_for, mirror_vertices
from ..render import views


@dataclass(frozen=True)
class Topology:
    """The triangles (and UV layout) of a reconstruction's mesh.

    name: e.g. "ict-face"; triangles: (F, 3) int64, counter-clockwise seen from outside;
    uv: (T, 2) float32 in [0, 1] (v up, as OBJ) and uv_faces (F, 3) int64 into it, or empty arrays.
    """

    name: str
    triangles: torch.Tensor
    uv: torch.Tensor
    uv_faces: torch.Tensor

    @staticmethod
    def of_model(model: MorphableModel) -> Topology:
        return Topology(model.name, model.faces, model.uv, model.uv_faces)


def camera_for_original(crop_camera: PerspectiveCamera, crop: Crop) -> PerspectiveCamera:
    """The camera of the original image equivalent to `crop_camera` on a (rotation-free) crop."""
    M = crop.M
    s = float(M[0, 0])
    if abs(M[0, 1]) > 1e-9 or abs(M[1, 0]) > 1e-9:
        raise ValueError("crop has an in-plane rotation; no single pinhole camera matches it")
    h, w = crop.original_shape
    return PerspectiveCamera(crop_camera.focal / s, (crop_camera.cx - M[0, 2]) / s, (crop_camera.cy - M[1, 2]) / s,
                             int(w), int(h), crop_camera.distance, crop_camera.near)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


@dataclass(frozen=True)
class Reconstruction:
    """One reconstructed face.

    geometry: FaceGeometry (batch 1): `vertices` (1, V, 3) model space (unposed; methods without a
        model frame give the posed mesh here too), `vertices_world` (1, V, 3) posed in the crop
        camera's frame, `normals` (1, V, 3) of the posed surface, `albedo` (1, V, 3) in [0, 1]. mm.
    topology: its triangles and UV layout.
    lm68: (68, 2) float32 landmarks projected into the ORIGINAL image (pixels, centres at integers).
    lm68_crop: (68, 2) float32 the same in crop pixels.
    pose_deg: {'yaw', 'pitch', 'roll'} degrees (yaw > 0: face turned towards image right);
        the rotation is R = Rz(roll) Ry(yaw) Rx(pitch) (docs/coordinates.md).
    translation_mm: (3,) mm (the model's float dtype), v_world = R v + t.
    camera_crop: the crop's PerspectiveCamera; camera: the equivalent camera of the original image
        (the crop is a similarity of it), so `camera.project(vertices_world)` lands on the photo.
    face: the detection it came from; crop: the aligned crop.
    method: the registered name of the method that made it; model_name: the morphable model's name.
    params: FaceParams (batch 1) when the method has model parameters, else None; layout: their
        ParamLayout (flat vector order, for `coeff`), else None.
    correspondence: (V,) int64, the model vertex each of our vertices stands for when the mesh is
        not in the model's topology; None when it is.
    blendshapes: {ARKit name: weight} for ICT parameters, else None.
    times: seconds per step. source: the image's name. image: the original photo (H, W, 3) uint8
        when known (needed by the 'textured' and 'overlay' outputs).
    model: the MorphableModel that decodes `params` (set by `from_params`), or None; used only when
        an output asks for it (the neutral mesh, the 3-D landmarks, the PNCC map's mean face).
    notes: {key: JSON-able value} the method's remarks on its outputs (e.g. VRN: where its landmarks
        and pose come from), written to the json output; None when it has none.
    """

    geometry: FaceGeometry
    topology: Topology
    lm68: np.ndarray
    lm68_crop: np.ndarray
    pose_deg: dict
    translation_mm: np.ndarray
    camera_crop: PerspectiveCamera
    camera: PerspectiveCamera
    face: Face
    crop: Crop
    method: str
    model_name: str
    params: FaceParams | None = None
    layout: ParamLayout | None = None
    correspondence: np.ndarray | None = None
    blendshapes: dict | None = None
    times: dict = field(default_factory=dict)
    source: str = ""
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    model: MorphableModel | None = field(default=None, repr=False, compare=False)
    notes: dict | None = None

    # -- numpy views, no batch dimension -------------------------------------------------------
    @property
    def vertices(self) -> np.ndarray:
        """(V, 3) float32 posed vertices, mm, crop camera frame."""
        return _np(self.geometry.vertices_world[0]).astype(np.float32)

    @property
    def vertices_model(self) -> np.ndarray:
        """(V, 3) float32 unposed (model-space) vertices, mm."""
        return _np(self.geometry.vertices[0]).astype(np.float32)

    @property
    def triangles(self) -> np.ndarray:
        """(F, 3) int64 vertex indices."""
        return _np(self.topology.triangles).astype(np.int64)

    @property
    def normals(self) -> np.ndarray:
        """(V, 3) float32 unit normals of the posed surface."""
        return _np(self.geometry.normals[0]).astype(np.float32)

    @property
    def albedo(self) -> np.ndarray:
        """(V, 3) float32 reflectance in [0, 1]."""
        return _np(self.geometry.albedo[0]).astype(np.float32)

    @property
    def rotation_matrix(self) -> np.ndarray:
        """(3, 3) float64 head rotation, model frame -> crop camera frame (x right, y up, z towards
        the viewer): R = Rz(roll) Ry(yaw) Rx(pitch) (docs/coordinates.md)."""
        if self.params is not None:
            ang = self.params.rotation[0].detach().double().cpu()
        else:
            ang = torch.tensor([math.radians(self.pose_deg[k]) for k in ("pitch", "yaw", "roll")], dtype=torch.float64)
        return euler_to_matrix(ang).numpy()

    @property
    def light(self) -> torch.Tensor | None:
        """(1, 27) SH lighting (facerecon.render.shading's layout), or None."""
        return None if self.params is None else self.params.light

    @property
    def coeff(self) -> np.ndarray | None:
        """(1, D) float32 flat parameter vector in `layout`'s order, or None."""
        if self.params is None or self.layout is None:
            return None
        return _np(self.layout.join(self.params)).astype(np.float32)

    @property
    def vertices_neutral(self) -> np.ndarray | None:
        """(V, 3) model-space vertices of the same identity with expression coefficients zero, mm;
        None without model parameters (or without the model). Decoded on each call."""
        if self.params is None or self.model is None or self.correspondence is not None:
            return None
        m = self.model
        ident = self.params.identity.to(m.mean_shape)
        with torch.no_grad():
            v = m.shape(ident, torch.zeros_like(self.params.expression).to(m.mean_shape))
        return _np(v[0])

    @property
    def landmarks3d(self) -> tuple[np.ndarray, np.ndarray] | None:
        """((68, 3) model space, (68, 3) posed in the crop camera's frame), mm: the model's landmarks
        (vertex + offset) of this mesh; None without the model (or another topology)."""
        if self.model is None or self.correspondence is not None or self.params is None:
            return None
        m, p = self.model, self.params
        with torch.no_grad():
            lm = m.landmarks(self.geometry.vertices.to(m.mean_shape))
            posed = m.pose(lm, p.rotation.to(lm), p.translation.to(lm))
        return _np(lm[0]), _np(posed[0])

    # -- 3DDFA_V3's outputs: parts, 106 / 134 landmarks, extracted texture ---------------------------
    @property
    def annotations(self) -> FaceAnnotations | None:
        """The part and landmark annotations of this mesh's topology (the ICT face), or None."""
        if self.model is None or self.correspondence is not None:
            return None
        return annotations_for(self.model)

    def _pose_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        dt = self.geometry.vertices.dtype
        rot = torch.tensor([math.radians(self.pose_deg[k]) for k in ("pitch", "yaw", "roll")], dtype=dt)
        if self.params is not None:
            rot = self.params.rotation[0].detach().cpu().to(dt)
        return rot, torch.as_tensor(np.asarray(self.translation_mm), dtype=dt)

    def landmarks_2d(self, name: str = "lm106", space: str = "image") -> np.ndarray | None:
        """(N, 2) float32 landmarks in pixels of the original image (`space` 'image') or the crop ('crop').

        name: 'lm68' (the 68 of `lm68`), 'lm106' (JD layout), 'lm106_2d' (its jaw re-picked on the
        silhouette for this pose, 3DDFA_V3's ldm106_2d) or 'lm134' (docs/landmarks.md). None when
        the topology has no annotations (106 / 134 / 106_2d).
        """
        if space not in ("image", "crop"):
            raise ValueError(f"space must be 'image' or 'crop', got {space!r}")
        if name == "lm68":
            return self.lm68 if space == "image" else self.lm68_crop
        if name not in ("lm106", "lm106_2d", "lm134"):
            raise ValueError(f"unknown landmark set {name!r}; choose lm68, lm106, lm106_2d or lm134")
        ann = self.annotations
        if ann is None:
            return None
        cam = self.camera if space == "image" else self.camera_crop
        v = self.geometry.vertices[0].detach().cpu()
        rot, t = self._pose_tensors()
        with torch.no_grad():
            if name == "lm106_2d":
                return _np(ann.contour_2d(v, rot, t, cam)).astype(np.float32)
            pts = (ann.lm106 if name == "lm106" else ann.lm134)(v)
            posed = pts @ euler_to_matrix(rot).T + t
            return _np(cam.project(posed)[:, :2]).astype(np.float32)

    @property
    def lm106(self) -> np.ndarray | None:
        """(106, 2) float32 JD-layout landmarks in original-image pixels; None without annotations."""
        return self.landmarks_2d("lm106", "image")

    @property
    def lm134(self) -> np.ndarray | None:
        """(134, 2) float32 dense eye/brow/lip landmarks in original-image pixels; None without annotations."""
        return self.landmarks_2d("lm134", "image")

    def landmark_sets(self) -> dict | None:
        """Every landmark set in crop and image pixels (+ model / posed mm for 68, 106, 134), as
        `io.export.ExportItem.landmarks` holds them; None without annotations."""
        ann = self.annotations
        if ann is None:
            return None
        v = self.geometry.vertices[0].detach().cpu()
        rot, t = self._pose_tensors()
        R = euler_to_matrix(rot)
        out = {}
        for name, lmset in (("lm68", ann.lm68), ("lm106", ann.lm106), ("lm106_2d", None), ("lm134", ann.lm134)):
            d = {"crop_px": self.landmarks_2d(name, "crop"), "image_px": self.landmarks_2d(name, "image")}
            if lmset is not None:
                with torch.no_grad():
                    m = lmset(v)
                    d["model_mm"], d["posed_mm"] = _np(m), _np(m @ R.T + t)
            out[name] = d
        return out

    def _part_mesh(self):
        """(posed vertices with the eye caps, faces, labels) of the part-labelled mesh, or None."""
        ann = self.annotations
        if ann is None:
            return None
        faces, labels = ann.part_mesh(self.triangles)
        return ann.cap_vertices(self.geometry.vertices_world[0].detach().cpu()), faces, labels

    def part_masks(self, space: str = "crop", visible: bool = False) -> np.ndarray | None:
        """3DDFA_V3's part segmentation of this face.

        visible False (V3's ``seg``): (8, H, W) bool, part k (`PART_NAMES` order: right eye, left eye,
        right brow, left brow, nose, upper lip, lower lip, skin — "right" = the subject's right) drawn
        even where the pose hides it. visible True (``seg_visible``): (H, W) uint8, 0 background,
        k + 1 where part k is the front-most surface. space 'crop' (S × S) or 'image' (the original
        photo's pixels). None when the topology has no annotations.
        """
        if space not in ("image", "crop"):
            raise ValueError(f"space must be 'image' or 'crop', got {space!r}")
        pm = self._part_mesh()
        if pm is None:
            return None
        from ..render.parts import part_label_map, part_masks

        cam = self.camera if space == "image" else self.camera_crop
        return part_label_map(*pm, cam) if visible else part_masks(*pm, cam, n_parts=len(PART_NAMES))

    def _mirror(self) -> torch.Tensor | None:
        if self.model is None or self.correspondence is not None:
            return None
        return torch.as_tensor(mirror_vertices(self.model.mean_shape))

    def extracted_texture(self, size: int = 512, skin_mask: np.ndarray | str | None = "parser") -> dict | None:
        """3DDFA_V3's extractTex beside the albedo-only texture: {"texture_extracted", "texture_albedo"}
        (T, T, 3) uint8 on the model's UV layout (`render.texture.extract_filled_uv_texture`).

        skin_mask: (H, W) skin probability in [0, 1] in the original photo's pixels to reject
        occluders; "parser": the trained face parser's (`detect.parsing.face_probability_in_photo`;
        the colour stand-in alone when no parser weights are installed); None: the colour stand-in
        only. None without the photo or a UV layout.
        """
        if self.image is None or len(self.topology.uv) == 0:
            return None
        g, topo = self.geometry, self.topology
        return views.extracted_texture(g.vertices_world, topo.triangles, topo.uv, topo.uv_faces, self.camera,
                                       self.image, g.albedo, self._mirror(), size, self._skin_mask(skin_mask))

    def _skin_mask(self, skin_mask):
        if not isinstance(skin_mask, str):
            return skin_mask
        if skin_mask != "parser":
            raise ValueError(f"skin_mask must be an array, 'parser' or None, not '{skin_mask}'")
        from ..detect.parsing import face_probability_in_photo, shared_parser

        parser = shared_parser()
        return None if parser is None or self.image is None else face_probability_in_photo(parser, self.crop)

    @property
    def head(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The model family's full head (ICT: 26,719 vertices with neck, mouth socket, eyes, teeth)
        decoded with this face's identity and expression and posed like it: ((Vh, 3) model space mm,
        (Vh, 3) posed in the crop camera's frame mm, (Fh, 3) int64 triangles, (Vh, 3) shaded colours
        in [0, 1]). Its first V vertices are this mesh's. None without model parameters or without a
        head model (BFM). Decoded on each call."""
        if self.params is None or self.model is None or self.correspondence is not None:
            return None
        from ..models import head_model

        hm = head_model(self.model)
        if hm is None:
            return None
        p, V = self.params, self.model.n_vertices
        with torch.no_grad():
            v = hm.shape(p.identity.to(hm.mean_shape), p.expression.to(hm.mean_shape))
            posed = hm.pose(v, p.rotation.to(v), p.translation.to(v))
            normals = vertex_normals(posed, hm.faces)
            # The head's documented constant albedo, with this face's (fitted) reflectance on its vertices.
            albedo = hm.albedo_mean.expand_as(v).clone()
            albedo[:, :V] = self.geometry.albedo.to(albedo)
            colors = views.shaded_colors(albedo, normals, self.light)
        return _np(v[0]), _np(posed[0]), _np(hm.faces), colors

    def with_image(self, pixels: np.ndarray | None, source: str | None = None) -> Reconstruction:
        return replace(self, image=pixels, source=self.source if source is None else source)

    # -- conveniences ----------------------------------------------------------------------------
    def to_trimesh(self, posed: bool = True):
        """A `trimesh.Trimesh` of the mesh (posed in the crop camera's frame, or model space) with
        shaded vertex colours."""
        import trimesh

        v = self.vertices if posed else self.vertices_model
        rgba = np.concatenate([views.shaded_colors(self.geometry.albedo, self.geometry.normals, self.light),
                               np.ones((len(v), 1), np.float32)], 1)
        return trimesh.Trimesh(v, self.triangles, vertex_colors=np.clip(rgba * 255 + 0.5, 0, 255).astype(np.uint8),
                               process=False)

    def default_stem(self) -> str:
        return Path(self.source).stem if self.source else "face"

    def export_item(self, formats=None, texture_size: int = 512) -> exporters.ExportItem:
        """The plain-numpy `ExportItem` for `formats` (None: every registered format), with the
        images they need rendered (`facerecon.render.views`)."""
        g, topo = self.geometry, self.topology
        names = exporters.images_needed(_formats(formats))
        with torch.no_grad():
            images = views.render_images(
                names, vertices_world=g.vertices_world, albedo=g.albedo, light=self.light, faces=topo.triangles,
                camera_crop=self.camera_crop, crop_image=self.crop.image, lm68_crop=self.lm68_crop,
                lm68_detected_crop=self.crop.lm68, camera_photo=self.camera, photo=self.image, uv=topo.uv,
                uv_faces=topo.uv_faces, texture_size=texture_size, pncc_reference=self._pncc_reference(),
                parts=self._part_mesh() if names & set(views.PART_VIEWS) else None,
                mirror=self._mirror() if names & {"texture_extracted", "texture_albedo"} else None,
                skin_mask=self._skin_mask("parser") if "texture_extracted" in names else None)
            colors = views.shaded_colors(g.albedo, g.normals, self.light)
        chosen = _formats(formats)
        lm3d = self.landmarks3d if "landmarks3d" in chosen else None
        head = self.head if "head" in chosen else None
        return exporters.ExportItem(
            vertices=_np(g.vertices[0]), vertices_posed=_np(g.vertices_world[0]), faces=self.triangles,
            colors=colors, albedo=_np(g.albedo[0]), uv=_np(topo.uv), uv_faces=_np(topo.uv_faces), coeff=self.coeff,
            crop_image=self.crop.image, lm68_crop=self.lm68_crop, lm5_crop=self.crop.lm5, lm68_image=self.lm68,
            lm68_detected_crop=self.crop.lm68, pose_deg=self.pose_deg, rotation=self.rotation_matrix,
            translation_mm=self.translation_mm,
            camera=exporters.camera_json(self.camera), box=self.face.box, detector=self.face.source,
            blendshapes=self.blendshapes, times=self.times, source=self.source, model=self.model_name, images=images,
            vertices_neutral=self.vertices_neutral if "neutral" in chosen else None,
            landmarks3d=None if lm3d is None else lm3d[0], landmarks3d_posed=None if lm3d is None else lm3d[1],
            landmarks=self.landmark_sets() if "landmarks" in chosen else None, notes=self.notes,
            **({} if head is None else {"head_vertices": head[0], "head_vertices_posed": head[1],
                                        "head_faces": head[2], "head_colors": head[3]}))

    def _pncc_reference(self) -> torch.Tensor:
        """The shape whose PNCC code colours the PNCC map: the model's mean face, else this mesh."""
        if self.model is not None and self.correspondence is None:
            return self.model.mean_shape
        return self.geometry.vertices[0]

    def save(self, out_dir, formats=None, stem: str | None = None, texture_size: int = 512) -> list[Path]:
        """Write `formats` (names of `facerecon.io.export`'s registry; None: every registered format)
        for this face into `out_dir` as `stem`.* (default: the source image's stem); returns the
        paths written, each written atomically. 'textured' and 'overlay' need the original photo
        (`image`, attached by the API) and are skipped without it."""
        formats = _formats(formats)
        return exporters.export(self.export_item(formats, texture_size), out_dir, stem or self.default_stem(), formats)


def _formats(formats) -> tuple[str, ...]:
    if formats is None:
        return tuple(exporters.available_exporters())
    return (formats,) if isinstance(formats, str) else tuple(formats)


def from_params(model: MorphableModel, camera: PerspectiveCamera, params: FaceParams, lm68_crop: torch.Tensor,
                crops: list[Crop], faces: list[Face], method: str, times: dict | None = None) -> list[Reconstruction]:
    """Reconstructions of a batch of B faces from model parameters.

    params: FaceParams (B) in `camera`'s frame; lm68_crop: (B, 68, 2) the model's landmarks
    projected into the crops; crops/faces: B each."""
    out = []
    with torch.no_grad():
        geo_all = model(params)
    topo = Topology.of_model(model)
    ict_weights = model.exp_prior == "unit_interval" and bool(model.expression_names)
    for i, (crop, face) in enumerate(zip(crops, faces)):
        p = params[i]
        geo = FaceGeometry(*(t[i:i + 1] for t in (geo_all.vertices, geo_all.vertices_world,
                                                    geo_all.normals, geo_all.albedo)))
        lm_crop = lm68_crop[i].detach().cpu().double().numpy()
        pitch, yaw, roll = (math.degrees(float(a)) for a in p.rotation[0])
        bs = None
        if ict_weights:
            bs = {n: float(w) for n, w in zip(model.expression_names, p.expression[0])}
        out.append(Reconstruction(
            geometry=geo, topology=topo, lm68=crop.crop_to_original(lm_crop).astype(np.float32),
            lm68_crop=lm_crop.astype(np.float32), pose_deg={"yaw": yaw, "pitch": pitch, "roll": roll},
            translation_mm=_np(p.translation[0]), camera_crop=camera,
            camera=camera_for_original(camera, crop), face=face, crop=crop, method=method, model_name=model.name,
            params=p, layout=model.layout, blendshapes=bs, times=dict(times or {}), source=crop.source, model=model))
    return out


__all__ = ["Reconstruction", "Topology", "camera_for_original", "from_params"]
