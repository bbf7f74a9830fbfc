"""One embedded d-engine node in its own Python process, for the 3-process
cluster test: ``python embedded_node.py <config.toml>``.

Starts ``EmbeddedEngine.start_with(config)``, prints ``{"ready": node_id}``,
then answers one JSON request per stdin line with one JSON line on stdout:
``{"ok": result}`` or ``{"error": message, "type": exception class}``.
Keys and values travel as UTF-8 strings. ``lock`` and ``campaign`` block
until acquired and keep the lock or leadership (with its kept-alive lease)
until ``unlock`` or the process ends. Exits on EOF or ``{"op": "stop"}``.
"""

from __future__ import annotations

import json
import sys

import d_engine as dengine


def main() -> int:
    engine = dengine.EmbeddedEngine.start_with(sys.argv[1])
    client = engine.client()
    held = {}  # locks and leaderships held, by key (their leases are kept alive by threads)
    print(json.dumps({"ready": engine.node_id, "client_addr": engine.client_addr}), flush=True)
    try:
        for line in sys.stdin:
            req = json.loads(line)
            op = req["op"]
            try:
                if op == "stop":
                    engine.stop()
                    result = None
                elif op == "wait_ready":
                    result = engine.wait_ready(req.get("timeout", 10.0)).id
                elif op == "leader":
                    result = client.leader().id
                elif op == "members":
                    result = sorted(m.id for m in client.members())
                elif op == "put":
                    result = client.put(req["key"], req["value"])
                elif op == "get":
                    kv = client.get(req["key"], req.get("consistency", "linearizable"))
                    result = None if kv is None else kv.value.decode()
                elif op == "cas":
                    r = client.compare_and_swap(req["key"], req["expected"], req["new"], ttl=req.get("ttl"))
                    result = r.succeeded
                elif op == "lock":
                    lock = client.lock(req["name"], ttl=req.get("ttl", 10.0), timeout=req.get("timeout"))
                    held[lock.key.decode()] = lock
                    result = {"key": lock.key.decode(), "revision": lock.revision}
                elif op == "unlock":
                    held.pop(req["key"]).unlock()
                    result = None
                elif op == "campaign":
                    won = client.campaign(req["name"], req["value"], ttl=req.get("ttl", 10.0))
                    held[won.key.decode()] = won
                    result = {"key": won.key.decode(), "revision": won.revision}
                elif op == "election_leader":
                    kv = client.election_leader(req["name"])
                    result = None if kv is None else kv.value.decode()
                else:
                    raise ValueError(f"unknown op {op!r}")
                reply = {"ok": result}
            except Exception as e:  # noqa: BLE001 - reported to the test
                reply = {"error": str(e), "type": type(e).__name__}
            print(json.dumps(reply), flush=True)
            if op == "stop":
                break
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
