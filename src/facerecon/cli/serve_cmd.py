"""`facerecon serve`: a local web page to upload a photo, a set or a short video and look at the result."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="a local web page: upload photos or a video, see and download the result")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--method", default="fit",
                   help="the method selected on the page and built at start (any registered: "
                        "facerecon reconstruct --list-methods); the others are built on first use")
    p.add_argument("--model", default="ict", choices=["ict", "bfm"])
    p.add_argument("--workdir", default=None,
                   help="where results are kept (default: a temporary folder, removed on exit)")
    p.add_argument("--max-upload-mb", type=float, default=100.0, help="upload size limit (default: %(default)s)")
    p.add_argument("--max-frames", type=int, default=120, help="video frames per request, at most (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=run)


def run(args) -> int:
    import logging

    from .. import api, serve
    from ..errors import FaceReconError

    if args.method not in api.available_methods():
        raise FaceReconError(f"unknown method {args.method!r}; choose from {', '.join(api.available_methods())}")
    if args.threads:
        api.set_threads(args.threads)
    engine = serve.Engine(args.workdir, model=args.model,
                          limits=serve.Limits(max_upload_mb=args.max_upload_mb, max_frames=args.max_frames))
    try:
        app = serve.create_app(engine, default_method=args.method)
        logging.getLogger("facerecon").info("loading method %s", args.method)
        engine.warm(args.method)
        print(f"facerecon serve: open http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
        serve.serve_forever(app, args.host, args.port)
    finally:
        engine.close()
    return 0
