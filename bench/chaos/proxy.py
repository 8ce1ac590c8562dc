"""A round-robin TCP proxy in front of the Daphnes, standing in for the load balancer (no nginx here).

    python -m bench.chaos.proxy --port 8000 --backend 8001 --backend 8002

Each client connection goes to the next backend in turn; a backend that refuses the connection is skipped
for the next one, as nginx's default `proxy_next_upstream error` does, so a dead Daphne costs only the
requests that were in flight on it. Bytes are copied both ways until either side closes; then both are
closed. It prints "ready" once listening and logs each refused backend (with the time) to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import sys
import time

CONNECT_TIMEOUT = 2.0
CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


class Proxy:
    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.turn = itertools.cycle(range(len(backends)))

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        first = next(self.turn)
        for offset in range(len(self.backends)):
            port = self.backends[(first + offset) % len(self.backends)]
            try:
                return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                print(f"{time.time():.3f} backend {port} refused: {type(exc).__name__}", file=sys.stderr, flush=True)
        return None

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            # Every backend is down: the client sees its connection closed without an answer.
            await _close(client_writer)
            return
        server_reader, server_writer = upstream
        legs = [
            asyncio.ensure_future(_pipe(client_reader, server_writer)),
            asyncio.ensure_future(_pipe(server_reader, client_writer)),
        ]
        await asyncio.wait(legs, return_when=asyncio.FIRST_COMPLETED)
        for leg in legs:
            leg.cancel()
        await asyncio.gather(*legs, return_exceptions=True)
        await _close(server_writer)
        await _close(client_writer)


async def serve(port: int, backends: list[int]) -> None:
    proxy = Proxy(backends)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", port, reuse_address=True, backlog=512)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos.proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", type=int, action="append", required=True, help="a backend port on 127.0.0.1")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.backend))
    return 0


if __name__ == "__main__":
    sys.exit(main())
