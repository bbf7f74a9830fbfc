"""Latency and throughput of d-engine from Python.

    python clients/python/bench.py                       # embedded only
    python clients/python/bench.py --standalone          # + a 3-node d-engine-server cluster it starts
    python clients/python/bench.py --endpoints 127.0.0.1:9083   # + an existing cluster

Embedded: one node in-process (fsync durability) in a temp dir (``--dir`` to
choose the disk). Reports p50/p99 per operation (sequential calls from one
thread), throughput with concurrent callers (threads, and asyncio), and the
ratio of an embedded ``get`` from Python to the same ``get`` issued from Rust
in the same process (``_native.bench_get``: the identical ``block_on`` path
without Python) -- "a few microseconds over Rust" is the target. That
baseline exists only in an extension built with the ``bench`` feature; build
it in release for meaningful numbers:
``MATURIN_PEP517_ARGS="--profile release --features bench" pip install ./clients/python``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List

import d_engine as dengine


def pct(samples: List[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def latency(name: str, fn: Callable[[int], object], n: int) -> Dict[str, float]:
    for i in range(min(200, n)):  # warm up
        fn(i)
    samples = []
    for i in range(n):
        t = time.perf_counter_ns()
        fn(i)
        samples.append((time.perf_counter_ns() - t) / 1000.0)
    r = {"p50_us": pct(samples, 0.5), "p99_us": pct(samples, 0.99), "mean_us": statistics.fmean(samples)}
    print(f"  {name:<34} p50 {r['p50_us']:9.1f} us   p99 {r['p99_us']:9.1f} us   (n={n})")
    return r


def threaded_throughput(name: str, fn: Callable[[int, int], object], threads: int, seconds: float) -> float:
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def work(t: int) -> None:
        i = 0
        while time.monotonic() < stop:
            fn(t, i)
            i += 1
        counts[t] = i

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    rate = sum(counts) / (time.monotonic() - t0)
    print(f"  {name:<34} {rate:12,.0f} ops/s   ({threads} threads, {seconds:.0f}s)")
    return rate


def async_throughput(name: str, make_op: Callable[[int], object], inflight: int, seconds: float) -> float:
    async def run() -> float:
        stop = time.monotonic() + seconds
        done = 0

        async def worker(w: int) -> None:
            nonlocal done
            i = 0
            while time.monotonic() < stop:
                await make_op(w * 10_000_000 + i)
                i += 1
                done += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(inflight)))
        return done / (time.monotonic() - t0)

    rate = asyncio.run(run())
    print(f"  {name:<34} {rate:12,.0f} ops/s   ({inflight} in flight, asyncio, {seconds:.0f}s)")
    return rate


def bench_client(label: str, c, ac_factory, n: int, seconds: float, threads: int) -> Dict[str, object]:
    value = b"x" * 100
    out: Dict[str, object] = {}
    print(f"{label}: 100-byte values")
    out["put"] = latency("put (linearizable write)", lambda i: c.put(b"bench/%08d" % i, value), n)
    out["get_linearizable"] = latency("get linearizable", lambda i: c.get(b"bench/%08d" % (i % n)), n)
    out["get_lease"] = latency("get lease", lambda i: c.get(b"bench/%08d" % (i % n), "lease"), n)
    out["get_eventual"] = latency("get eventual", lambda i: c.get(b"bench/%08d" % (i % n), "eventual"), n * 5)
    out["put_tput_threads"] = threaded_throughput(
        "put throughput", lambda t, i: c.put(b"tp/%d/%d" % (t, i), value), threads, seconds
    )
    out["get_tput_threads"] = threaded_throughput(
        "get linearizable throughput", lambda t, i: c.get(b"bench/%08d" % (i % n)), threads, seconds
    )
    if ac_factory is not None:
        out["put_tput_async"] = async_throughput(
            "put throughput", lambda i: ac_factory().put(b"ap/%d" % i, value), 256, seconds
        )
    return out


def embedded(args) -> Dict[str, object]:
    root = Path(args.dir or tempfile.mkdtemp(prefix="d-engine-bench-"))
    with dengine.EmbeddedEngine.start(root / "embedded") as e:
        e.wait_ready(10)
        c = e.client()
        ac = None

        def aio():
            nonlocal ac
            if ac is None:
                ac = e.aio_client()
            return ac

        out = bench_client(f"embedded (data dir {root})", c, aio, args.n, args.seconds, args.threads)
        # Python get vs the same get from Rust, same process and engine.
        from d_engine import _native

        bench_get = getattr(_native, "bench_get", None)
        if bench_get is None:
            print("embedded get: Python vs Rust skipped (build the extension with --features bench)")
            return out
        print("embedded get: Python vs Rust (same engine, same path)")
        c.put(b"ratio", b"x" * 100)
        for cons_name, code in (("eventual", 2), ("linearizable", 0)):
            n = args.n * (10 if code == 2 else 2)
            c.get(b"ratio", cons_name)
            rp50, rp99, _ = bench_get(e._n, b"ratio", n, code)
            py = latency(f"python get {cons_name}", lambda i, cn=cons_name: c.get(b"ratio", cn), n)
            rust = {"p50_us": rp50 / 1000.0, "p99_us": rp99 / 1000.0}
            print(f"  {'rust get ' + cons_name:<34} p50 {rust['p50_us']:9.1f} us   p99 {rust['p99_us']:9.1f} us")
            print(
                f"  => python/rust p50 ratio {py['p50_us'] / rust['p50_us']:.2f}"
                f" (+{py['p50_us'] - rust['p50_us']:.1f} us per call)"
            )
            out[f"ratio_{cons_name}"] = {"python": py, "rust": rust}
    return out


def standalone(args, endpoints: List[str]) -> Dict[str, object]:
    with dengine.Client(endpoints) as c:
        holder = {}

        def aio():
            return holder.setdefault("c", dengine.AsyncClient(endpoints))

        return bench_client(f"standalone ({len(endpoints)} endpoints)", c, aio, args.n, args.seconds, args.threads)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="samples per latency measurement")
    p.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput run")
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--dir", help="where the embedded engine (and started servers) keep data")
    p.add_argument("--standalone", action="store_true", help="start a 3-node d-engine-server cluster and bench it")
    p.add_argument("--endpoints", help="bench an existing cluster (comma-separated host:port)")
    args = p.parse_args()
    print(f"python {sys.version.split()[0]}, cpus {os.cpu_count()}")
    embedded(args)
    if args.endpoints:
        standalone(args, args.endpoints.split(","))
    elif args.standalone:
        sys.path.insert(0, str(Path(__file__).parent / "tests"))
        from cluster import ServerCluster, server_binary, wait_until

        root = Path(args.dir or tempfile.mkdtemp(prefix="d-engine-bench-")) / "servers"
        root.mkdir(parents=True, exist_ok=True)
        cluster = ServerCluster(server_binary(), root)
        cluster.start()
        try:
            with dengine.Client(cluster.endpoints) as c:
                wait_until("the cluster", lambda: c.put(b"ready", b"1"), 30)
            standalone(args, cluster.endpoints)
        finally:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
