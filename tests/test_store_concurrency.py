"""Several processes (CLI + mixer in real life) writing to one store at the same time."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from fluxmix.store import open_store

WORKERS = 4
ROUNDS = 8

# Each worker opens the (possibly not yet existing) store, waits for the start signal so that all
# of them collide, then races: distinct bytes on one auto-tagged name, identical bytes on another,
# explicit tags on its own spec, plus mixer-state writes. Every result goes to stdout as JSON.
WORKER = r"""
import json, os, sys, time
from datetime import datetime, timezone
from fluxmix.store import JournalEntry, open_store

home, worker, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
while not os.path.exists(go):
    time.sleep(0.005)
store = open_store(home)
out = []
try:
    for i in range(int(sys.argv[4])):
        r = store.import_bytes("scenario", f"worker {worker} round {i}\n".encode(), name="shared")
        out.append(["shared", r.tag, r.hash, r.created])
        r = store.import_bytes("scenario", b"identical bytes\n", name="same")
        out.append(["same", r.tag, r.hash, r.created])
        r = store.import_bytes("spec", f"spec {worker} {i}\n".encode(), name=f"own-{worker}", tag=f"1.{i}.0")
        out.append([f"own-{worker}", r.tag, r.hash, r.created])
        store.record_activation(JournalEntry(datetime.now(timezone.utc), "test", None, None, r.hash, "activated", "ok"))
        store.set_active(r.hash, f"own-{worker}:{r.tag}", known_good=True)
        store.save_checkpoint("shared", f"gear-{worker}", {"round": i})
finally:
    store.close()
print(json.dumps(out))
"""


def test_processes_importing_at_once_leave_a_consistent_index(tmp_path: Path) -> None:
    home = tmp_path / "home"  # not created yet: the workers also race on creating the store
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(home), str(w), str(go), str(ROUNDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WORKERS)
    ]
    results = []
    try:
        time.sleep(0.3)  # let the interpreters start so the imports really overlap
        go.touch()
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 0, stderr
            assert "database is locked" not in stderr
            results.extend(json.loads(stdout))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    with open_store(home) as store:
        shared = store.entries("scenario", "shared")
        # Every distinct content got its own tag; no tag was handed out twice.
        assert len(shared) == WORKERS * ROUNDS
        assert len({e.hash for e in shared}) == WORKERS * ROUNDS
        assert sorted(e.tag for e in shared) == sorted(f"v0.{n}.0" for n in range(1, WORKERS * ROUNDS + 1))
        reported = {(tag, digest) for name, tag, digest, created in results if name == "shared"}
        assert reported == {(e.tag, e.hash) for e in shared}

        # Identical bytes racing for the same auto tag: one tag, created exactly once.
        same = store.entries("scenario", "same")
        assert [e.tag for e in same] == ["v0.1.0"]
        same_results = [r for r in results if r[0] == "same"]
        assert Counter(created for *_, created in same_results) == Counter({True: 1, False: len(same_results) - 1})
        assert {tag for _, tag, _, _ in same_results} == {"v0.1.0"}

        for w in range(WORKERS):
            assert [e.tag for e in store.entries("spec", f"own-{w}")] == [f"v1.{i}.0" for i in reversed(range(ROUNDS))]
            assert store.load_checkpoint("shared", f"gear-{w}") == {"round": ROUNDS - 1}
        assert len(store.journal(limit=1000)) == WORKERS * ROUNDS
        assert store.mixer_state().active_hash is not None
        report = store.verify()
        assert report.ok and report.corrupt == [] and report.missing == []
        leftovers = [p for p in (home / "blobs").rglob(".tmp-*")]
        assert leftovers == []
