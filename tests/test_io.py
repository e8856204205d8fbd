import numpy as np
import pytest
from PIL import Image as PILImage

from facerecon.errors import InputImageError
from facerecon.io import load_image, read_mat, write_mat, write_npz, write_obj, write_ply


def _save(tmp_path, img, name, **kw):
    p = tmp_path / name
    img.save(p, **kw)
    return p


def test_exif_orientation_applied(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = 255  # left half white
    img = PILImage.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° CW on display
    p = _save(tmp_path, img, "r.jpg", exif=exif.tobytes(), quality=95)
    out = load_image(p).pixels
    assert out.shape == (40, 20, 3)
    assert out[:15].mean() > 200 and out[25:].mean() < 50  # white half now on top


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA", "CMYK"])
def test_modes_become_rgb8(tmp_path, mode):
    a = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint8)
    base = PILImage.fromarray(a)
    if mode == "I;16":
        img = PILImage.fromarray(a.astype(np.uint16) * 257)
        p = _save(tmp_path, img, "x.png")
    elif mode == "CMYK":
        p = _save(tmp_path, base.convert("CMYK"), "x.jpg")
    else:
        p = _save(tmp_path, base.convert(mode), "x.png" if mode != "CMYK" else "x.jpg")
    out = load_image(p).pixels
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    if mode in ("L", "I;16"):
        assert np.abs(out[..., 0].astype(int) - a).max() <= 1


def test_rgba_transparent_composited_on_white(tmp_path):
    a = np.zeros((8, 8, 4), np.uint8)
    p = _save(tmp_path, PILImage.fromarray(a, "RGBA"), "t.png")
    assert load_image(p).pixels.min() == 255


def test_bad_inputs_name_the_file(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    with pytest.raises(InputImageError, match="broken.jpg"):
        load_image(tmp_path / "broken.jpg")
    with pytest.raises(InputImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputImageError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(InputImageError):
        load_image(np.zeros((4, 4, 2), np.uint8))


def test_array_inputs():
    g = load_image(np.full((5, 6), 7, np.uint8)).pixels
    assert g.shape == (5, 6, 3) and g.max() == 7
    f = load_image(np.full((5, 6, 3), 0.5, np.float32)).pixels
    assert f.dtype == np.uint8 and f[0, 0, 0] == 128


def _tetra():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    c = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]])
    return v, f, c


def test_obj_round_trip_vertex_colors(tmp_path):
    import trimesh

    v, f, c = _tetra()
    write_obj(tmp_path / "m.obj", v, f, colors=c)
    m = trimesh.load(tmp_path / "m.obj", process=False)
    assert np.allclose(m.vertices, v, atol=1e-6) and np.array_equal(m.faces, f)
    assert np.allclose(m.visual.vertex_colors[:, :3] / 255.0, c, atol=1 / 255 + 1e-6)


def test_obj_textured_round_trip(tmp_path):
    import trimesh

    v, f, _ = _tetra()
    uv = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float64)
    tex = np.zeros((16, 16, 3), np.uint8)
    tex[..., 1] = 200
    write_obj(tmp_path / "t.obj", v, f, uv=uv, uv_faces=f, texture=tex)
    assert (tmp_path / "t.mtl").is_file() and (tmp_path / "t.png").is_file()
    m = trimesh.load(tmp_path / "t.obj", process=False)
    assert len(m.faces) == 4 and m.visual.uv is not None
    assert np.asarray(m.visual.material.image).shape[:2] == (16, 16)


def test_ply_round_trip(tmp_path):
    import trimesh

    v, f, c = _tetra()
    write_ply(tmp_path / "m.ply", v, f, colors=c)
    m = trimesh.load(tmp_path / "m.ply", process=False)
    assert np.allclose(m.vertices, v, atol=1e-6) and np.array_equal(m.faces, f)
    assert np.allclose(m.visual.vertex_colors[:, :3] / 255.0, c, atol=1 / 255 + 1e-6)


def test_bad_mesh_rejected_without_writing(tmp_path):
    v, f, _ = _tetra()
    with pytest.raises(ValueError, match="faces"):
        write_obj(tmp_path / "bad.obj", v, f + 10)
    assert not any(tmp_path.iterdir())


def test_npz_and_mat(tmp_path):
    arrays = {"coeff": np.arange(257, dtype=np.float32)[None], "lm_68p": np.ones((68, 2))}
    write_npz(tmp_path / "a.npz", arrays)
    with np.load(tmp_path / "a.npz") as z:
        assert np.array_equal(z["coeff"], arrays["coeff"])
    write_mat(tmp_path / "a.mat", arrays)
    back = read_mat(tmp_path / "a.mat")
    assert back["coeff"].shape == (1, 257) and np.allclose(back["lm_68p"], 1)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
