"""WebSocket echo load for benches/load/websocket.sh: CONNS connections to URL, each sending
MESSAGES messages of SIZE bytes one at a time and waiting for each echo. Prints one line:
`messages=<n> seconds=<s> per_second=<r>`. Needs the `websockets` package
(tests/python/requirements.txt)."""

import asyncio
import sys
import time

from websockets.asyncio.client import connect


async def one(url, messages, payload):
    async with connect(url, open_timeout=30, max_size=None) as ws:
        for _ in range(messages):
            await ws.send(payload)
            await ws.recv()


async def main(url, conns, messages, size):
    payload = "x" * size
    started = time.perf_counter()
    await asyncio.gather(*(one(url, messages, payload) for _ in range(conns)))
    seconds = time.perf_counter() - started
    total = conns * messages
    print(f"messages={total} seconds={seconds:.3f} per_second={total / seconds:.0f}")


if __name__ == "__main__":
    url, conns, messages, size = sys.argv[1], *map(int, sys.argv[2:5])
    asyncio.run(main(url, conns, messages, size))
