"""Embedded mode: the engine runs inside this Python process.

    python examples/python/embedded.py [data-dir]

Single node with no network listeners. For a cluster, write a TOML config
per node (docs/config.md) and use EmbeddedEngine.start_with("node1.toml").
"""

import sys
import tempfile

import d_engine as dengine

data_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="d-engine-")

with dengine.EmbeddedEngine.start(data_dir) as engine:
    engine.wait_ready(timeout=5)
    client = engine.client()  # same methods as dengine.Client

    rev = client.put(b"key", b"value")
    print(f"put at revision {rev}; get = {client.get(b'key').value!r}")

    for i in range(3):
        client.put(f"user/{i}", f"name-{i}")
    print("scan user/:", [kv.key for kv in client.scan_prefix("user/")])

    try:
        client.put(42, b"x")
    except TypeError as e:
        print("bad input:", e)

print(f"stopped; data kept in {data_dir} (start again to read it back)")
