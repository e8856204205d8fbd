"""The `head` exporter: ICT's full head decoded with the face's coefficients, model space and posed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerecon.io.export import export

from .conftest import need_asset
from .test_export import _item, _reconstruction


@pytest.mark.assets
def test_head_meshes_extend_the_face_and_are_posed_like_it(tmp_path, ict_model):
    import trimesh

    need_asset("ict-facekit")
    rec, _ = _reconstruction(ict_model)
    paths = rec.save(tmp_path, ("obj", "posed", "head"), stem="f")
    assert [p.name for p in paths] == ["f.obj", "f_posed.obj", "f_head.obj", "f_head_posed.obj"]
    load = lambda n: trimesh.load(tmp_path / n, process=False)
    face, face_posed, head, head_posed = (load(n) for n in ("f.obj", "f_posed.obj", "f_head.obj", "f_head_posed.obj"))
    V = ict_model.n_vertices
    assert len(head.vertices) == len(head_posed.vertices) == 26719 and len(head.faces) > 2 * len(face.faces)
    # The face is the head's vertex prefix, in both frames.
    assert np.abs(head.vertices[:V] - face.vertices).max() < 1e-4
    assert np.abs(head_posed.vertices[:V] - face_posed.vertices).max() < 1e-4
    # Every head vertex is posed by the face's rigid transform.
    p = rec.params
    with torch.no_grad():
        ref = ict_model.pose(torch.tensor(head.vertices, dtype=torch.float32)[None], p.rotation, p.translation)[0]
    assert np.abs(head_posed.vertices - ref.numpy()).max() < 1e-3
    # It is a whole head: deeper front to back than the face area (which reaches the ears), with a
    # back of the head behind the face's rearmost point (mm).
    assert np.ptp(head.vertices[:, 2]) > np.ptp(face.vertices[:, 2]) + 40
    assert (head.vertices[:, 2] < face.vertices[:, 2].min() - 30).sum() > 200
    # Colours: the face's own on the face (but at its border, where the head's normals see the
    # neighbouring neck and ear triangles too).
    same = (head.visual.vertex_colors[:V] == face.visual.vertex_colors).all(1)
    assert same.mean() > 0.9


def test_head_is_skipped_without_a_head_and_checked_when_given(tmp_path):
    it = _item()
    assert export(it, tmp_path, "f", ("head",)) == []
    import dataclasses

    V = len(it.vertices)
    with pytest.raises(ValueError, match="head_"):
        dataclasses.replace(it, head_vertices=np.zeros((V + 5, 3), np.float32))
    v = np.random.default_rng(0).normal(size=(V + 5, 3)).astype(np.float32)
    full = dataclasses.replace(it, head_vertices=v, head_vertices_posed=v + 1, head_faces=np.array([[0, 1, V + 4]]),
                               head_colors=np.full((V + 5, 3), 0.5, np.float32))
    paths = export(full, tmp_path, "f", ("head",))
    assert [p.name for p in paths] == ["f_head.obj", "f_head_posed.obj"]
    lines = paths[1].read_text().splitlines()
    xyz = np.array([[float(x) for x in ln.split()[1:4]] for ln in lines if ln.startswith("v ")])
    assert np.allclose(xyz, v + 1, atol=1e-4)
    assert [ln.split()[1:] for ln in lines if ln.startswith("f ")] == [["1", "2", str(V + 5)]]
