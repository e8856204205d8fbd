"""`facerecon assets list|path`: which external assets are found, missing or damaged."""

from __future__ import annotations


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
