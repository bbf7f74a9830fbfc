"""Standalone mode: talk to a running d-engine-server (default port 9083).

d-engine-server --config d-engine.toml     # or: cargo run -p d-engine-server
python examples/python/standalone.py [127.0.0.1:9083]
"""

import sys

import d_engine as dengine

endpoint = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9083"

client = dengine.Client(endpoint)
client.put(b"key", b"value")

kv = client.get(b"key")
print(f"get(key) = {kv.value!r} at revision {kv.mod_revision}")

client.put("session/42", "alice", ttl=30)  # str is UTF-8; expires in 30 s
print("eventual read:", client.get("session/42", consistency="eventual"))

swap = client.compare_and_swap(b"key", expected=b"value", new_value=b"value2")
print("compare_and_swap succeeded:", swap.succeeded)

print("members:", [(m.id, m.client_addr) for m in client.members()])
print("leader:", client.leader())
client.close()
