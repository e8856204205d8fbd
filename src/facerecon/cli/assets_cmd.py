"""`facerecon assets list|path|fetch`: which external assets are found, missing or damaged, and
the explicit download of missing ones (the only command that downloads)."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser("assets", help="list the external assets (models, weights) and where they were found")
    s = p.add_subparsers(dest="assets_command", metavar="ACTION")
    s.required = True
    ls = s.add_parser("list", help="show found / missing / bad hash for every asset")
    ls.add_argument("--no-hash", action="store_true", help="skip sha256 verification (faster)")
    ls.set_defaults(func=run_list)
    pp = s.add_parser("path", help="print the folder of one asset (error if missing)")
    pp.add_argument("name")
    pp.set_defaults(func=run_path)
    fp = s.add_parser("fetch", help="download assets from their upstream URLs or a mirror (sha256-checked, resumable)",
                      description="Download assets into $FACERECON_ASSETS/<name> when that folder is writable, "
                                  "else ~/.cache/facerecon/assets/<name> (or --dest DIR/<name>). Assets already "
                                  "present with good sha256s are left alone. A rerun resumes interrupted downloads.")
    fp.add_argument("names", nargs="*", metavar="NAME", help="assets to fetch (see `facerecon assets list`)")
    fp.add_argument("--all", action="store_true",
                    help="every asset that can be downloaded (not the user-supplied bfm09)")
    fp.add_argument("--mirror", metavar="URL",
                    help="base URL serving <URL>/<asset>/<file> instead of the upstream sources "
                         "(default: $FACERECON_ASSET_MIRROR)")
    fp.add_argument("--dest", metavar="DIR", help="folder to create <name>/ in")
    fp.add_argument("--force", action="store_true", help="download again even when present and valid")
    fp.set_defaults(func=run_fetch)


def run_list(args) -> int:
    from .. import assets

    rows = []
    for name, a in assets.REGISTRY.items():
        st = assets.check(name, verify_hash=not args.no_hash)
        rows.append((name, st.state, str(st.location) if st.location else "-", a.licence))
    w = [max(len(r[i]) for r in rows + [("asset", "state", "location", "licence")]) for i in range(4)]
    print("  ".join(h.ljust(w[i]) for i, h in enumerate(("asset", "state", "location", "licence"))))
    for r in rows:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)))
    missing = [r[0] for r in rows if r[1] != "found"]
    if missing:
        print(f"\nnot found or damaged: {', '.join(missing)} — `facerecon assets path NAME` explains how to obtain one")
    return 1 if any(r[1] == "bad hash" for r in rows) else 0


def run_path(args) -> int:
    from .. import assets

    print(assets.resolve(args.name))
    return 0


def run_fetch(args) -> int:
    from .. import assets, fetch
    from ..errors import AssetError

    if args.all and args.names:
        raise AssetError("give asset names or --all, not both")
    if not args.all and not args.names:
        raise AssetError("name the assets to fetch or pass --all; `facerecon assets list` shows them")
    names = [n for n, a in assets.REGISTRY.items() if all(h is not None for _, h in a.files)] if args.all \
        else args.names
    failed = 0
    for name in names:
        try:
            where = fetch.fetch(name, root=args.dest, mirror=args.mirror, force=args.force, progress=not args.quiet)
        except AssetError as e:
            if len(names) == 1:
                raise
            print(f"facerecon: error: {e}", file=sys.stderr)
            failed += 1
            continue
        if not args.quiet:
            print(f"{name}: {where}")
    if failed:
        print(f"facerecon: {failed} of {len(names)} assets failed", file=sys.stderr)
    return 2 if failed else 0
