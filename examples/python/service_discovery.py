"""Service discovery with a lease: each instance registers a key attached to
a lease it keeps alive; a watcher lists the prefix, then watches it from the
listing's revision + 1, so it misses no change. An instance that dies stops
renewing: its lease expires and its key disappears by itself.

d-engine-server --config d-engine.toml
python examples/python/service_discovery.py [127.0.0.1:9083]
"""

import sys

import d_engine as dengine

PREFIX = b"services/web/"


def list_then_watch(client: dengine.Client, prefix: bytes):
    """The live instances (all pages) and a watch that starts right after the listing."""
    instances = {}
    page = client.range(prefix, prefix=True)
    revision = page.revision
    while True:
        instances.update({kv.key: kv.value for kv in page.kvs})
        if not page.more:
            break
        page = client.range(page.next_key, dengine.prefix_end(prefix))
    return instances, revision, client.watch_prefix(prefix, start_revision=revision + 1)


endpoint = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9083"
with dengine.Client(endpoint) as client:
    client.delete_range(PREFIX, prefix=True)  # a clean slate for the demo

    # Instance a: registered while its `with` block runs (kept alive every ttl/3).
    with client.lease(2.0, on_lost=lambda e: print("instance a lost its lease:", e)) as a:
        client.put(PREFIX + b"a", b"10.0.0.1:8080", lease=a.id)

        # Instance b: registers, then "crashes" (stops renewing, never revokes).
        b = client.lease(2.0)
        client.put(PREFIX + b"b", b"10.0.0.2:8080", lease=b.id)

        instances, revision, watch = list_then_watch(client, PREFIX)
        print(f"at revision {revision}: {sorted(k.decode() for k in instances)}")

        b.stop()  # the crash: its key goes when the lease expires, about 2 s from now
        print("instance b crashed; waiting for its lease to expire...")
        with watch:
            for event in watch:
                print(f"rev {event.revision}: {event.type} {event.kv.key.decode()}")
                if event.type == "delete" and event.kv.key == PREFIX + b"b":
                    break
        print("instance a is still registered:", client.get(PREFIX + b"a") is not None)

    # Leaving the block revoked a's lease: its key is gone at once.
    print("after a's clean exit:", [kv.key.decode() for kv in client.range_iter(PREFIX, prefix=True)])
