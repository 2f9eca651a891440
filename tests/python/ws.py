"""WebSocket peers for tests/websocket.rs, on the `websockets` package (tests/python/requirements.txt).

  python3 ws.py server
      An echo server on 127.0.0.1 (port chosen by the OS). Prints `PORT <n>`, then one line per
      handshake it receives: `HANDSHAKE <path> upgrade=<Upgrade header or ->`. A path starting with
      /forbidden is refused with 403 before any switch. A client offering the `chat`
      subprotocol gets it.

  python3 ws.py client
      Reads commands on stdin, one per line, and answers each with one line on stdout:
        open <url>    -> OPEN | REFUSED <status> | FAILED <error>
        send <text>   -> ECHO <text received back>
        close         -> CLOSED (the close handshake done and the connection ended)
        wait          -> CLOSED (the peer ended the connection: idle timeout, shutdown)
"""

import sys


def server():
    from websockets.sync.server import serve
    from websockets.http11 import Response
    from websockets.datastructures import Headers

    def process_request(connection, request):
        upgrade = request.headers.get("Upgrade", "-")
        print(f"HANDSHAKE {request.path} upgrade={upgrade}", flush=True)
        if request.path.startswith("/forbidden"):
            return Response(403, "Forbidden", Headers([("Content-Length", "9")]), b"forbidden")
        return None

    from websockets.exceptions import ConnectionClosed

    def select_subprotocol(connection, subprotocols):
        return "chat" if "chat" in subprotocols else None

    def echo(ws):
        try:
            for message in ws:
                ws.send(message)
        except ConnectionClosed:
            pass  # the gateway closed the tunnel (idle timeout, shutdown): expected here

    with serve(
        echo,
        "127.0.0.1",
        0,
        process_request=process_request,
        select_subprotocol=select_subprotocol,
    ) as srv:
        print(f"PORT {srv.socket.getsockname()[1]}", flush=True)
        srv.serve_forever()


def client():
    from contextlib import ExitStack
    from websockets.sync.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    connections = ExitStack()
    ws = None
    for line in sys.stdin:
        cmd, _, arg = line.rstrip("\n").partition(" ")
        if cmd == "open":
            try:
                ws = connections.enter_context(connect(arg, open_timeout=10, close_timeout=10))
                answer = "OPEN"
            except InvalidStatus as e:
                answer = f"REFUSED {e.response.status_code}"
            except Exception as e:  # noqa: BLE001 - reported to the test, which decides
                answer = f"FAILED {type(e).__name__}: {e}".replace("\n", " ")
        elif cmd == "send":
            ws.send(arg)
            answer = f"ECHO {ws.recv(timeout=10)}"
        elif cmd == "close":
            ws.close()
            answer = "CLOSED"
        elif cmd == "wait":
            try:
                ws.recv(timeout=30)
                answer = "UNEXPECTED message"
            except ConnectionClosed:
                answer = "CLOSED"
            except TimeoutError:
                answer = "STILL OPEN"
        else:
            answer = f"UNKNOWN {cmd}"
        print(answer, flush=True)


if __name__ == "__main__":
    {"server": server, "client": client}[sys.argv[1]]()
