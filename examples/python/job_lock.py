"""A job lock: workers take turns on "jobs/nightly"; each run carries the
lock's fencing revision, which a protected store uses to refuse a stale
holder (one whose lock already passed on).

python examples/python/job_lock.py [127.0.0.1:9083]
"""

import sys
import threading
import time

import d_engine as dengine

endpoint = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9083"
highest_token = 0
guard = threading.Lock()
runs = []


def write_result(token: int, worker: int) -> None:
    """The protected resource: refuses a token below the highest it has seen."""
    global highest_token
    with guard:
        if token < highest_token:
            raise RuntimeError(f"stale lock holder (token {token} < {highest_token})")
        highest_token = token
        runs.append((worker, token))


def worker(i: int) -> None:
    with dengine.Client(endpoint) as client:
        for _ in range(2):
            with client.lock("jobs/nightly", ttl=5, timeout=30) as lock:
                time.sleep(0.05)  # the job
                write_result(lock.revision, i)


threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for w, token in runs:
    print(f"worker {w} ran with fencing token {token}")
print("runs:", len(runs))
