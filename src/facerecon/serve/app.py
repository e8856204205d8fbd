"""The FastAPI app of `facerecon serve`: the page (package data under `static/`) and a small JSON API.

    GET  /                          the page (static/index.html); /static/... its JS, CSS, vendored viewer
    GET  /api/info                  methods, output formats, limits, version
    POST /api/reconstruct           multipart: files (1 photo, N photos of one person, or 1 video),
                                    method, photometric (0/1), max_frames, stride -> the result payload
    GET  /api/results/{id}          {"done", "error", "downloads"}: the downloads written so far
                                    (the page's own formats come with the answer, the rest just after)
    GET  /api/results/{id}/{name}   one file of a result (only names that result wrote)
    GET  /api/results/{id}/all.zip  every file of a result (once all are written)

Errors are JSON `{"error": message}`: 4xx for what the user can fix (a bad file, no face: the
message names the file), 503 when busy, 500 "internal error" for the rest (traceback in the
server's log only).
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures' types, which are
# imported inside `create_app` (the extra is optional) and must be real objects, not strings.
import io
import logging
import zipfile
from pathlib import Path
from typing import Annotated

from ..errors import FaceReconError
from ..errors import MissingExtraError as _Missing
from .engine import Engine, ServeError, Upload

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


def create_app(engine: "Engine | None" = None, default_method: str = "fit"):
    """The ASGI app serving `engine` (a new Engine by default). Needs the `serve` extra."""
    try:
        from fastapi import FastAPI, File, Form, Request, UploadFile
        from fastapi.responses import FileResponse, JSONResponse, Response
        from fastapi.staticfiles import StaticFiles
    except ImportError:
        raise _Missing("serve", "fastapi", "facerecon serve") from None
    try:
        import python_multipart  # noqa: F401  (FastAPI's form parsing)
    except ImportError:
        raise _Missing("serve", "python-multipart", "facerecon serve") from None
    from .. import __version__

    engine = engine or Engine()
    app = FastAPI(title="facerecon", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def error(status: int, message: str):
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); see the server's log")

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info")
    def info():
        methods = engine.methods()
        return {"version": __version__, "model": engine.model_name, "methods": methods,
                "default_method": default_method if default_method in methods else next(iter(methods)),
                "formats": {k: v for k, v in _formats().items() if k in engine.formats},
                "limits": {"max_upload_mb": engine.limits.max_upload_mb, "max_photos": engine.limits.max_photos,
                           "max_frames": engine.limits.max_frames}}

    @app.post("/api/reconstruct")
    def reconstruct(files: Annotated[list[UploadFile], File()] = [],  # noqa: B006 - FastAPI copies defaults
                    method: Annotated[str, Form()] = default_method, photometric: Annotated[int, Form()] = 1,
                    max_frames: Annotated[int | None, Form()] = None, stride: Annotated[int, Form()] = 1):
        limit = int(engine.limits.max_upload_mb * 1e6)
        uploads, total = [], 0
        for f in files:
            data = f.file.read(limit + 1 - total)
            total += len(data)
            if total > limit:
                return error(413, f"the upload is over the {engine.limits.max_upload_mb:g} MB limit")
            uploads.append(Upload(f.filename or "upload", data))
        try:
            return engine.run(uploads, method, photometric=bool(photometric), max_frames=max_frames, stride=stride)
        except ServeError as e:
            return error(e.status, str(e))
        except FaceReconError as e:
            # A bad file, no face, a missing optional extra: the user's to fix, and the message says how.
            log.info("refused: %s", e)
            return error(422, str(e))

    @app.get("/api/results/{rid}")
    def status(rid: str):
        try:
            return engine.status(rid)
        except FileNotFoundError:
            return error(404, f"no result {rid!r} (results are kept for the last {engine.max_results} requests)")

    @app.get("/api/results/{rid}/all.zip")
    def all_zip(rid: str):
        try:
            paths = engine.files(rid)
        except FileNotFoundError:
            return error(404, f"no result {rid!r} (results are kept for the last {engine.max_results} requests)")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for p in paths:
                z.write(p, p.name)
        return Response(buf.getvalue(), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="facerecon_{rid}.zip"'})

    @app.get("/api/results/{rid}/{name}")
    def result_file(rid: str, name: str):
        try:
            path = engine.file(rid, name)
        except FileNotFoundError:
            return error(404, f"no file {name!r} in result {rid!r}")
        return FileResponse(path, filename=name)

    return app


def _formats() -> dict[str, str]:
    from .. import api

    return api.output_formats()
