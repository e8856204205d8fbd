"""Logging setup and the capture of native code's stderr (`facerecon.log`)."""

from __future__ import annotations

import logging
import os

from facerecon.cli.main import main
from facerecon.log import configure, native_stderr_to_log


def test_native_stderr_becomes_debug_records(capfd, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG, logger="facerecon.native")
    root = logging.getLogger("facerecon")
    monkeypatch.setattr(root, "propagate", True)  # let caplog see the records ...
    monkeypatch.setattr(root, "handlers", [])  # ... and only caplog
    with native_stderr_to_log():
        os.write(2, b"W0000 native chatter\nsecond line\n")
        with native_stderr_to_log():  # re-entrant: runs uncaptured by the inner one, captured by the outer
            os.write(2, b"inner\n")
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "native chatter" not in err and "inner" not in err and "after" in err
    msgs = [r.getMessage() for r in caplog.records if r.name == "facerecon.native"]
    assert msgs == ["W0000 native chatter", "second line", "inner"]
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "facerecon.native")


def test_configure_levels():
    root = logging.getLogger("facerecon")
    for v, level in ((-1, logging.ERROR), (0, logging.WARNING), (1, logging.INFO), (2, logging.DEBUG)):
        configure(v)
        assert root.level == level
    assert sum(getattr(h, "_facerecon", False) for h in root.handlers) == 1  # one handler, however often
    configure(0)


def test_eval_help_has_no_doubled_percent(capsys):
    try:
        main(["eval", "aflw2000", "--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "NME (%)" in out and "%%" not in out
