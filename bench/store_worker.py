"""One importing process of the concurrent-import benchmark (spawned by bench.store).

Loads everything first, prints "ready", waits for "go" on stdin so that every worker starts
at once, imports its part, then prints a JSON line {"count", "start", "end"} (time.time()).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> int:
    home, spec = Path(sys.argv[1]), Path(sys.argv[2])
    items = json.loads(spec.read_text())
    from fluxmix.store import open_store

    store = open_store(home)
    try:
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return 1
        start = time.time()
        for name, tag, text in items:
            store.import_bytes("scenario", text.encode(), name=name, tag=tag)
        end = time.time()
    finally:
        store.close()
    print(json.dumps({"count": len(items), "start": start, "end": end}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
