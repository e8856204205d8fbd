"""`--engine ray`: a crash inside a call of several inputs is attributed to its input alone (both
Ray APIs), the start-up is reported, and a batch on a two-node cluster (`--address`) puts work on
both nodes. Ray starts in each test: they are slow-marked, and skipped without the ray extra."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from .conftest import ROOT, need_asset
from .test_batch import _cfg, _face_like, _tables

pq = pytest.importorskip("pyarrow.parquet", reason="batch tables need pyarrow (pip install 'facerecon[batch]')")


def _photos(d: Path, n: int, crash_at: int | None = None) -> list[str]:
    """n face-like PNGs in d (the one at `crash_at` kills the worker that detects on it)."""
    d.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        a = _face_like(200 + i)
        if i == crash_at:
            a[0, 0] = (1, 2, 3)  # tests/batch_plugin.py's CRASH_PIXEL
        PILImage.fromarray(a).save(d / f"p{i:02d}.png")
        names.append(f"p{i:02d}.png")
    return names


def test_store_reads_tables_written_before_the_node_column(tmp_path):
    """A results table of an older run (no `node` column) still merges: the column is null there."""
    import pyarrow as pa

    from facerecon.batch import ResultStore, results_schema

    schema = results_schema()
    old = pa.schema([f for f in schema if f.name != "node"])
    pq.write_table(pa.Table.from_pylist([{"source": "/x/old.jpg", "face": 0, "status": "ok"}], schema=old),
                   tmp_path / "results.parquet")
    s = ResultStore(tmp_path, flush_items=1)
    s.record([{"source": "/x/new.jpg", "face": 0, "status": "ok", "node": "n1"}], None)
    assert s.consolidate() == (2, 0)
    t = pq.read_table(tmp_path / "results.parquet")
    assert t.schema.equals(schema)
    assert dict(zip(t.column("source").to_pylist(), t.column("node").to_pylist())) == {"/x/old.jpg": None,
                                                                                     "/x/new.jpg": "n1"}


@pytest.mark.slow
@pytest.mark.parametrize("api", ["actors", "data"])
def test_ray_crash_inside_a_call_of_several_inputs_is_attributed_to_its_input(tmp_path, api):
    """11 inputs in calls (batches) of 3: the crashing input shares a call with others, which are
    sent again and recorded once each; only it is `worker_crashed`. Start-up is in summary.json."""
    need_asset("ict-facekit")
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'facerecon[ray]')")
    if api == "data":
        pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'ray[data]')")
    from facerecon.batch import run_batch

    names = _photos(tmp_path / "in", 11, crash_at=4)
    out = tmp_path / "out"
    s = run_batch([str(tmp_path / "in")], _cfg(out), engine="ray", workers=1, progress=False, api=api, batch=3,
                  depth=2)
    res, fail = _tables(out)
    assert [(Path(f["source"]).name, f["reason"]) for f in fail] == [("p04.png", "worker_crashed")]
    got = sorted(Path(r["source"]).name for r in res)
    assert got == sorted(n for n in names if n != "p04.png")  # each once: nothing lost, nothing doubled
    assert s.images_ok == 10 and s.images_failed == 1 and s.exit_code == 3
    assert sorted(p.name for p in (out / "faces").iterdir()) == sorted(r["stem"] + ".json" for r in res)
    assert not list((out / ".parts").glob("inflight-*"))  # the culprit's marker was consumed
    info = json.loads((out / "summary.json").read_text())
    assert info["engine"] == "ray" and info["engine_timings"]["ray_init_s"] > 0
    if api == "actors":
        assert 0 < info["engine_timings"]["actors_ready_s"] < s.seconds
    assert len(info["nodes"]) == 1 and {r["node"] for r in res} == set(info["nodes"])


@pytest.mark.slow
def test_ray_engine_on_a_two_node_cluster(tmp_path, monkeypatch):
    """A head and a second node (1 CPU each) on this machine; `address` joins them: 2 actors of 1
    CPU land one per node, both reconstruct, a crash on either is attributed, and resume works.
    Without `address`, a batch starts its own Ray beside the running cluster."""
    need_asset("ict-facekit")
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'facerecon[ray]')")
    from ray.cluster_utils import Cluster

    from facerecon.batch import run_batch

    # The nodes' workers import tests.batch_plugin: they inherit this environment.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        second = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        want_nodes = {cluster.head_node.node_id, second.node_id}
        assert len(want_nodes) == 2
        # 1 s per input: one actor alone would need ~20 s, so the second gets work even if it starts late.
        names = _photos(tmp_path / "in", 21, crash_at=7)
        out = tmp_path / "out"
        cfg = _cfg(out, method_options={"delay": 1.0})
        # Calls of 2: the actor that meets p07 has returned earlier calls before it crashes, whatever
        # the load makes of its restart (its next call waits for that restart).
        s = run_batch([str(tmp_path / "in")], cfg, engine="ray", workers=2, threads=1, address=cluster.address,
                      progress=False, batch=2)
        res, fail = _tables(out)
        assert [(Path(f["source"]).name, f["reason"]) for f in fail] == [("p07.png", "worker_crashed")]
        assert sorted(Path(r["source"]).name for r in res) == sorted(n for n in names if n != "p07.png")
        per_node = {n: sum(r["node"] == n for r in res) for n in want_nodes}
        assert all(k > 0 for k in per_node.values()), per_node  # both nodes did work
        assert {r["node"] for r in res} == want_nodes
        assert set(json.loads((out / "summary.json").read_text())["nodes"]) == want_nodes
        assert s.images_ok == 20 and s.images_failed == 1
        assert not ray.is_initialized()  # the driver left the cluster; the cluster itself runs on
        s2 = run_batch([str(tmp_path / "in")], cfg, engine="ray", workers=2, threads=1, address=cluster.address,
                       progress=False)
        assert s2.skipped_done == 21 and s2.images_ok == 0
        # Without an address the command starts a Ray of its own, even with this cluster running
        # (ray.init() without one would join it, and refuse the local Ray's CPU count).
        _photos(tmp_path / "in3", 2)
        s3 = run_batch([str(tmp_path / "in3")], _cfg(tmp_path / "out3"), engine="ray", workers=1, progress=False)
        own = json.loads((tmp_path / "out3" / "summary.json").read_text())["nodes"]
        assert s3.images_ok == 2 and len(own) == 1 and not set(own) & want_nodes
        lm = np.asarray(res[0]["landmarks"])
        assert lm.shape == (136,) and np.isfinite(lm).all()
    finally:
        ray.shutdown()
        cluster.shutdown()
