"""Watch a prefix: events arrive after commit, in revision order.

python examples/python/watch.py                 # embedded engine
python examples/python/watch.py 127.0.0.1:9083  # a d-engine-server
"""

import sys
import tempfile
import threading
import time

import d_engine as dengine


def writer(client) -> None:
    for i in range(3):
        time.sleep(0.1)
        client.put(f"jobs/{i}", f"job {i}")
    client.delete("jobs/0")


def run(client) -> None:
    with client.watch_prefix("jobs/") as watch:
        threading.Thread(target=writer, args=(client,), daemon=True).start()
        for n, event in enumerate(watch, 1):
            print(f"rev {event.revision}: {event.type} {event.kv.key!r} = {event.kv.value!r}")
            if n == 4:
                watch.cancel()  # ends the iteration (also callable from another thread)


if len(sys.argv) > 1:
    with dengine.Client(sys.argv[1]) as c:
        run(c)
else:
    with dengine.EmbeddedEngine.start(tempfile.mkdtemp()) as engine:
        engine.wait_ready(5)
        run(engine.client())
