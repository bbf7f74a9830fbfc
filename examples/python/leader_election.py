"""Leader election: three candidate processes campaign for "scheduler"; the
observer prints each leader; the leader is killed (SIGKILL: it never
resigns) and another candidate takes over once the dead one's lease ends.

python examples/python/leader_election.py [127.0.0.1:9083]
"""

import os
import signal
import subprocess
import sys
import time

import d_engine as dengine

CANDIDATE = r"""
import os, sys, time
import d_engine as dengine
with dengine.Client(sys.argv[1]) as c:
    with c.campaign("scheduler", ("pid %d" % os.getpid()).encode(), ttl=2.0) as leadership:
        print("elected", flush=True)
        time.sleep(3600)
"""

endpoint = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9083"
candidates = [subprocess.Popen([sys.executable, "-c", CANDIDATE, endpoint]) for _ in range(3)]
try:
    with dengine.Client(endpoint) as client, client.observe("scheduler") as leaders:
        for n, kv in enumerate(leaders, 1):
            print(f"leader: {kv.value.decode()} (term revision {kv.create_revision})")
            if n == 2:
                break
            pid = int(kv.value.split()[1])
            print(f"killing {pid}")
            os.kill(pid, signal.SIGKILL)
            t0 = time.monotonic()
        print(f"taken over {time.monotonic() - t0:.1f}s after the kill")
finally:
    for p in candidates:
        p.kill()
        p.wait()
