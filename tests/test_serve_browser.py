"""The page in a real browser: Debian's headless Chromium driven by Playwright (from PyPI; no
`playwright install`: the system browser is used). Starts `facerecon serve`'s app on a free port,
uploads the astronaut photo, waits for the result, screenshots it, and checks that the 3-D viewer's
canvas shows a mesh and that the numbers on the page are the API's.

Set FACERECON_SCREENSHOT=path.png to keep the page's screenshot (docs/serve.png is made so).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

from .conftest import need_asset

CHROMIUM = os.environ.get("FACERECON_CHROMIUM", "/usr/bin/chromium")
# WebGL without a GPU: SwiftShader, Chromium's software GL.
ARGS = ["--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
VIEWER_BG = np.array([0xDF, 0xE3, 0xEA])


@pytest.fixture(scope="module")
def browser():
    pw_api = pytest.importorskip("playwright.sync_api",
                                 reason="Playwright is not installed: pip install 'facerecon[serve-test]'")
    pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'facerecon[serve]'")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set FACERECON_CHROMIUM)")
    with pw_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    need_asset("ict-facekit")
    from facerecon.serve import BackgroundServer, Engine, create_app

    eng = Engine(tmp_path_factory.mktemp("serve"))
    eng.warm("regress")
    with BackgroundServer(create_app(eng, default_method="regress")) as s:
        yield s
    eng.close()


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.float64)


def test_upload_a_photo_and_see_the_result(browser, server, astronaut_path, tmp_path):
    from facerecon import api

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    problems = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    # The browser logs the bad file's 422 itself: expected. Anything else logged as an error is a bug.
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" and "status of 422" not in m.text
            else None)
    page.goto(server.url)
    page.wait_for_selector("#method option[value='regress']", state="attached")
    assert page.input_value("#method") == "regress"
    assert set(page.eval_on_selector_all("#method option", "os => os.map(o => o.value)")) == \
        set(api.available_methods())

    # A bad file first: a visible message naming it, no traceback.
    page.set_input_files("#files", files=[{"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": b"nope"}])
    page.click("#go")
    page.wait_for_selector("#error:not([hidden])")
    err = page.inner_text("#error")
    assert err.startswith("broken.jpg: not a readable image") and "Traceback" not in err

    page.set_input_files("#files", str(astronaut_path))
    page.click("#go")
    page.wait_for_selector("#viewer[data-loaded='1']", timeout=90_000)
    assert page.is_hidden("#error")
    page.wait_for_selector("#overlay[data-loaded='1']")

    # The viewer's canvas shows a mesh: many pixels away from the background, with texture variation.
    canvas = _png(page.locator("#viewer canvas").screenshot())
    off_bg = np.abs(canvas - VIEWER_BG).sum(-1) > 30
    assert off_bg.mean() > 0.10, f"the 3-D viewer looks blank ({off_bg.mean():.1%} of pixels are not background)"
    assert canvas[off_bg].std(0).mean() > 8, "the mesh is one flat colour: no shading or texture"
    h, w = off_bg.shape
    assert off_bg[h // 3: 2 * h // 3, w // 3: 2 * w // 3].mean() > 0.9, "the mesh is not in the viewer's centre"
    # ... and it turns: dragging changes the picture.
    box = page.locator("#viewer canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.58, box["y"] + box["height"] / 2, steps=5)  # ~30°
    page.mouse.up()
    turned = _png(page.locator("#viewer canvas").screenshot())
    assert np.abs(turned - canvas).mean() > 2, "dragging did not rotate the mesh"

    # The landmarks canvas: the photo, with the 68 points drawn in their colour.
    lm = _png(page.locator("#landmarks").screenshot())
    green = (lm[..., 1] > 200) & (lm[..., 0] < 120) & (lm[..., 2] < 140)
    assert lm.std() > 20 and green.sum() > 68 * 3, "the landmarks canvas shows no photo or no landmarks"

    # The numbers on the page are the API's for the same photo and method.
    ref = api.FaceReconstructor(method="regress").reconstruct(str(astronaut_path))[0]
    for k in ("yaw", "pitch", "roll"):
        shown = float(page.inner_text(f"#pose td[data-key='{k}']"))
        assert shown == pytest.approx(ref.pose_deg[k], abs=0.006), k
    for i, k in enumerate(("tx", "ty", "tz")):
        assert float(page.inner_text(f"#pose td[data-key='{k}']")) == pytest.approx(ref.translation_mm[i], abs=0.06)
    bars = dict(page.eval_on_selector_all("#blendshapes .v", "vs => vs.map(v => [v.dataset.key, v.textContent])"))
    assert bars.keys() == ref.blendshapes.keys()
    worst = max(abs(float(bars[k]) - v) for k, v in ref.blendshapes.items())
    assert worst < 6e-4, f"a blendshape weight on the page is {worst:.4f} off the API's"
    # One download button per file Reconstruction.save writes (the page's formats first, the rest after).
    page.wait_for_selector("#downloads[data-done='1']", timeout=60_000)
    written = {p.name for p in ref.save(tmp_path / "ref", stem="astronaut")}
    shown_files = set(page.eval_on_selector_all("#downloads a", "as => as.map(a => a.textContent)"))
    assert shown_files == written
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("FACERECON_SCREENSHOT"):  # the README's picture: the top of the page, 256 colours
        from PIL import Image

        pic = Image.open(io.BytesIO(page.screenshot(clip={"x": 0, "y": 0, "width": 1400, "height": 1100})))
        pic.convert("RGB").resize((1120, 880), Image.LANCZOS).quantize(256, dither=Image.Dither.NONE).save(
            os.environ["FACERECON_SCREENSHOT"], optimize=True)
    assert shot.stat().st_size > 10_000
    # The part masks, painted in the parts' colours (the PNGs hold codes): eyes, nose, lips, skin present.
    text = page.inner_text("#masks")
    assert all(f"astronaut_{n}.png" in text for n in ("seg", "seg_crop", "seg_visible", "seg_visible_crop"))
    page.wait_for_selector("#masks canvas[data-loaded='1']")
    seg = _png(page.locator("#masks canvas").nth(2).screenshot())  # seg_visible in the crop
    for rgb in ([0, 200, 80], [150, 60, 200], [250, 140, 60], [240, 210, 170]):
        assert (np.abs(seg - rgb).sum(-1) < 40).sum() > 20, f"part colour {rgb} missing from the visible-part mask"
    assert not problems, problems
    page.close()
