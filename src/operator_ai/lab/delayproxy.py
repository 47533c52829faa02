"""A TCP proxy that holds every byte back for a fixed time: the lab's latency without netem.

The lab's kernel has no netem qdisc, so latency is added in user space. nft rules inside a
node's network namespace ``redirect`` chosen TCP connections to this proxy: in prerouting for
connections the node accepts, in output for connections it dials (matched with ``meta skuid``
of the lab user, so the proxy's own upstream connections, made as root, are left alone).

For each connection the proxy asks the kernel for the original destination
(``SO_ORIGINAL_DST``), connects there and forwards both directions. Every chunk is delivered
``delay_ms`` after it was received, and so is EOF; chunks wait in a timestamped queue, so the
delay adds latency without limiting throughput (up to ``MAX_IN_FLIGHT`` bytes per direction
are held at once). The client's connect succeeds at once; only data is delayed.

    python -m operator_ai.lab.delayproxy --port 7001 --delay-ms 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from collections.abc import Sequence

SO_ORIGINAL_DST = 80
CHUNK = 64 * 1024
MAX_IN_FLIGHT = 16 * 1024 * 1024
CONNECT_TIMEOUT = 10.0

log = logging.getLogger(__name__)


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """The (host, port) a redirected IPv4 connection was addressed to before nft rewrote it."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    return socket.inet_ntoa(raw[4:8]), int.from_bytes(raw[2:4], "big")


class _DelayLine:
    """One direction of a connection: chunks wait here until `delay` after they arrived."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.total = 0
        self._queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self._held = 0
        self._room = asyncio.Event()
        self._room.set()

    async def fill(self, src: asyncio.StreamReader) -> None:
        """Read `src` to EOF, stamping each chunk with the time it is due; EOF is queued too."""
        loop = asyncio.get_running_loop()
        while True:
            # A slow receiver must push back on the sender instead of growing this queue.
            await self._room.wait()
            chunk = await src.read(CHUNK)
            self._queue.put_nowait((loop.time() + self.delay, chunk))
            if not chunk:
                return
            self.total += len(chunk)
            self._held += len(chunk)
            if self._held >= MAX_IN_FLIGHT:
                self._room.clear()

    async def empty_into(self, dst: asyncio.StreamWriter) -> None:
        """Write each chunk to `dst` when it is due; half-close `dst` when EOF is due."""
        loop = asyncio.get_running_loop()
        while True:
            due, chunk = await self._queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not chunk:
                if dst.can_write_eof():
                    dst.write_eof()
                return
            dst.write(chunk)
            await dst.drain()
            self._held -= len(chunk)
            if self._held < MAX_IN_FLIGHT:
                self._room.set()


def _address(sockaddr: tuple[str, int] | None) -> str:
    return "?" if sockaddr is None else f"{sockaddr[0]}:{sockaddr[1]}"


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _proxy(
    client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, delay: float
) -> None:
    """Forward one redirected connection to its original destination, delayed both ways."""
    peer = _address(client_writer.get_extra_info("peername"))
    target = "?"
    outcome = "stopped"
    started = time.monotonic()
    out, back = _DelayLine(delay), _DelayLine(delay)
    try:
        try:
            host, port = original_destination(client_writer.get_extra_info("socket"))
        except OSError as exc:
            outcome = f"closed: no original destination ({exc.strerror})"
            return
        target = f"{host}:{port}"
        if (host, port) == client_writer.get_extra_info("sockname")[:2]:
            # Connecting onward would reach this proxy again.
            outcome = "closed: addressed to the proxy itself, not redirected"
            return
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), CONNECT_TIMEOUT
            )
        except OSError as exc:
            outcome = f"closed: cannot connect ({str(exc) or 'timed out'})"
            return
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(out.fill(client_reader))
                tasks.create_task(out.empty_into(upstream_writer))
                tasks.create_task(back.fill(upstream_reader))
                tasks.create_task(back.empty_into(client_writer))
            outcome = "done"
        except* OSError as errors:
            outcome = f"broken ({errors.exceptions[0]})"
        finally:
            await _close(upstream_writer)
    finally:
        await _close(client_writer)
        log.info(
            "%s -> %s: %s, %d B out, %d B back, %.2f s",
            peer,
            target,
            outcome,
            out.total,
            back.total,
            time.monotonic() - started,
        )


async def serve(port: int, delay_ms: int) -> None:
    """Proxy connections redirected to 0.0.0.0:`port`, `delay_ms` each way, until cancelled."""
    delay = delay_ms / 1000
    connections: set[asyncio.Task[None]] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await _proxy(reader, writer, delay)
        finally:
            connections.discard(task)

    server = await asyncio.start_server(accept, "0.0.0.0", port, family=socket.AF_INET)
    log.info("listening on 0.0.0.0:%d, delaying each direction by %d ms", port, delay_ms)
    try:
        await server.serve_forever()
    finally:
        server.close()
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)


async def _serve_until_signalled(port: int, delay_ms: int) -> None:
    serving = asyncio.create_task(serve(port, delay_ms))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, serving.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await serving


def main(argv: Sequence[str] | None = None) -> int:
    """Run the delay proxy until SIGTERM or SIGINT; exit 0 then."""
    parser = argparse.ArgumentParser(
        prog="python -m operator_ai.lab.delayproxy",
        description="Forward nft-redirected TCP connections, delaying each direction.",
    )
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0.0.0.0)")
    parser.add_argument(
        "--delay-ms", type=int, required=True, help="delay added to each direction, in ms"
    )
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error("--port must be between 1 and 65535")
    if args.delay_ms < 0:
        parser.error("--delay-ms must be 0 or more")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="delayproxy: %(message)s")
    try:
        asyncio.run(_serve_until_signalled(args.port, args.delay_ms))
    except OSError as exc:
        log.error(
            "cannot listen on port %d: %s; pick a free --port (ss -ltn shows those in use)",
            args.port,
            exc,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
