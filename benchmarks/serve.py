"""`facerecon serve`: time from upload to result for one photo, per method.

    .venv/bin/python benchmarks/serve.py [--methods regress,fit] [--repeat 3] [--threads 2] [--browser]

Starts the app on a free port (methods built and warmed first, as `facerecon serve` does), then per
method posts the photo (scikit-image's astronaut, 512², or --image) `--repeat` times over HTTP and
prints the median wall time of the request (upload → JSON result, every output format written), split
into the server's reconstruction and output-writing seconds. With --browser, also the page's own
time in headless Chromium: file chosen → the 3-D viewer has drawn the mesh (GLB fetched and parsed).
The machine is shared: say the load (printed) with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path


def post(url: str, name: str, data: bytes, method: str) -> dict:
    import json

    b = uuid.uuid4().hex
    parts = [f'--{b}\r\nContent-Disposition: form-data; name="method"\r\n\r\n{method}\r\n'.encode(),
             f'--{b}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
             f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n", f"--{b}--\r\n".encode()]
    req = urllib.request.Request(f"{url}/api/reconstruct", data=b"".join(parts),
                                 headers={"Content-Type": f"multipart/form-data; boundary={b}"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def browser_time(url: str, image: Path, method: str, repeat: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=os.environ.get("FACERECON_CHROMIUM", "/usr/bin/chromium"),
                               headless=True, args=["--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader",
                                                    "--enable-unsafe-swiftshader"])
        page = b.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.wait_for_selector(f"#method option[value='{method}']", state="attached")
        page.select_option("#method", method)
        for _ in range(repeat):
            page.set_input_files("#files", str(image))
            t0 = time.perf_counter()
            page.click("#go")
            page.wait_for_function("document.getElementById('viewer').dataset.loaded === '0'")
            page.wait_for_selector("#viewer[data-loaded='1']", timeout=600_000)
            out.append(time.perf_counter() - t0)
            page.wait_for_selector("#downloads[data-done='1']", timeout=600_000)
        b.close()
    return out


def eng_last(eng) -> str | None:
    """The newest result's id (None before any)."""
    return next(reversed(eng._results), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="regress,fit")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image", default=None, help="a photo (default: scikit-image's astronaut)")
    ap.add_argument("--browser", action="store_true", help="also time the page in headless Chromium")
    args = ap.parse_args()

    from facerecon import api
    from facerecon.serve import BackgroundServer, Engine, create_app

    api.set_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    if args.image:
        image = Path(args.image)
    else:
        from PIL import Image
        from skimage import data

        image = tmp / "astronaut.png"
        Image.fromarray(data.astronaut()).save(image)
    payload = image.read_bytes()
    methods = args.methods.split(",")
    eng = Engine(tmp / "results")
    for m in methods:
        eng.warm(m)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; torch threads {args.threads}")
    with BackgroundServer(create_app(eng, default_method=methods[0])) as s:
        for m in methods:
            post(s.url, image.name, payload, m)  # first request: lazy caches (numba kernels, detector warm-up)
            eng.wait(eng_last(eng), 600)
            wall, rec, outs, full = [], [], [], []
            for _ in range(args.repeat):
                eng.wait(eng_last(eng), 600)  # the previous request's background outputs are done
                t0 = time.perf_counter()
                res = post(s.url, image.name, payload, m)
                wall.append(time.perf_counter() - t0)
                eng.wait(res["id"], 600)
                full.append(time.perf_counter() - t0)
                rec.append(res["seconds"]["reconstruct"])
                outs.append(res["seconds"]["outputs"])
            med = statistics.median
            print(f"{m:16s} upload→result {med(wall):6.2f} s (median of {args.repeat}; min {min(wall):.2f}) = "
                  f"reconstruct {med(rec):.2f} s + page outputs {med(outs):.2f} s + rest "
                  f"{med(wall) - med(rec) - med(outs):.2f} s; every download written {med(full):.2f} s")
            if args.browser:
                b = browser_time(s.url, image, m, args.repeat)
                print(f"{m:16s} page: choose → 3-D mesh drawn {med(b):6.2f} s (median of {args.repeat})")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    eng.close()


if __name__ == "__main__":
    main()
