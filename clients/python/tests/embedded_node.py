"""One embedded d-engine node in its own Python process, for the 3-process
cluster test: ``python embedded_node.py <config.toml>``.

Starts ``EmbeddedEngine.start_with(config)``, prints ``{"ready": node_id}``,
then answers one JSON request per stdin line with one JSON line on stdout:
``{"ok": result}`` or ``{"error": message, "type": exception class}``.
Keys and values travel as UTF-8 strings. Exits on EOF or ``{"op": "stop"}``.
"""

from __future__ import annotations

import json
import sys

import d_engine as dengine


def main() -> int:
    engine = dengine.EmbeddedEngine.start_with(sys.argv[1])
    client = engine.client()
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
                    r = client.compare_and_swap(
                        req["key"], req["expected"], req["new"], ttl=req.get("ttl")
                    )
                    result = r.succeeded
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
