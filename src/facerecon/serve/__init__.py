"""`facerecon serve`: a local web page to try the reconstruction (optional extra `serve`).

Upload a photo, several photos of one person, or a short video; pick a method; see the overlay, the
landmarks, a rotatable 3-D view of the textured mesh (GLB), pose and ARKit blendshape values, part
masks when a method provides them, and download every output. The page (HTML/JS/CSS and a vendored
three.js bundle, `static/`) needs no network.

    from facerecon.serve import Engine, create_app, BackgroundServer
    with BackgroundServer(create_app(Engine())) as s:
        print(s.url)

`engine` does the work (no web framework; imports only the API and the exporter registry), `app` is
the FastAPI app, `server` runs it. FastAPI/uvicorn are imported only when an app is made or served.
"""

from .app import create_app
from .engine import BusyError, Engine, Limits, ServeError, Upload, UploadError
from .server import BackgroundServer, free_port, serve_forever

__all__ = ["BackgroundServer", "BusyError", "Engine", "Limits", "ServeError", "Upload", "UploadError",
           "create_app", "free_port", "serve_forever"]
