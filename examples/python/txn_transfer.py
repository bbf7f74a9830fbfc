"""Transactions: move money between two accounts atomically, retrying when a
concurrent writer changed either account in between (optimistic concurrency
on mod_revision). The total never changes.

python examples/python/txn_transfer.py [127.0.0.1:9083]
"""

import sys
import threading

import d_engine as dengine
from d_engine import Compare, Op

ACCOUNTS = [b"bank/alice", b"bank/bob", b"bank/carol"]


def transfer(client: dengine.Client, src: bytes, dst: bytes, amount: int) -> bool:
    """Moves ``amount`` from src to dst; False if src has too little."""
    while True:
        a, b = client.get_multi([src, dst])
        if int(a.value) < amount:
            return False
        r = client.txn(
            compare=[Compare.mod_revision(src) == a.mod_revision, Compare.mod_revision(dst) == b.mod_revision],
            success=[Op.put(src, b"%d" % (int(a.value) - amount)), Op.put(dst, b"%d" % (int(b.value) + amount))],
        )
        if r.succeeded:
            return True  # else someone wrote in between: read again and retry


endpoint = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9083"
with dengine.Client(endpoint) as client:
    client.txn(success=[Op.put(k, b"100") for k in ACCOUNTS])

    def worker(i: int) -> None:
        for j in range(20):
            transfer(client, ACCOUNTS[(i + j) % 3], ACCOUNTS[(i + j + 1) % 3], 7)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    page = client.range(b"bank/", prefix=True)
    balances = {kv.key.decode(): int(kv.value) for kv in page.kvs}
    print("balances:", balances)
    print("total:", sum(balances.values()))
