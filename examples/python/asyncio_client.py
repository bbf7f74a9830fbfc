"""asyncio: the gRPC AsyncClient (standalone) and AsyncEmbeddedEngine (in-process)
have the same coroutine methods.

    python examples/python/asyncio_client.py                 # embedded
    python examples/python/asyncio_client.py 127.0.0.1:9083  # standalone
"""

import asyncio
import sys
import tempfile

import d_engine as dengine


async def work(client) -> None:
    revs = await asyncio.gather(*(client.put(f"k/{i}", f"v{i}") for i in range(100)))
    print(f"100 concurrent puts, revisions {min(revs)}..{max(revs)}")
    print("get k/7:", (await client.get("k/7")).value)
    print("scan k/ limit 3:", [kv.key for kv in await client.scan_prefix("k/", limit=3)])


async def main() -> None:
    if len(sys.argv) > 1:
        async with dengine.AsyncClient(sys.argv[1]) as client:
            await work(client)
    else:
        async with await dengine.AsyncEmbeddedEngine.start(tempfile.mkdtemp()) as engine:
            await engine.wait_ready(5)
            await work(engine.client())


asyncio.run(main())
