"""A real grpcio server or client for tests/grpc.rs, without generated code: methods are generic
handlers whose messages are raw bytes (identity serializers), which is all the gateway sees anyway.

  grpc_peer.py serve
      Serves /rg.Test/{Unary,Fail,Slow,Stream,Chat} on 127.0.0.1 (plain HTTP/2, no TLS), prints
      "PORT <n>" once listening and runs until stdin closes or it is killed.
  grpc_peer.py call HOST:PORT METHOD REQUEST
      One call (for Chat, REQUEST is how many messages to exchange, each sent only once the
      echo of the one before has arrived); prints a JSON object: code (a grpc.StatusCode name), details, responses,
      initial and trailing metadata ([[key, value], ...]).
"""

import json
import queue
import sys
import threading
import time

import grpc  # a missing grpcio must fail the test loudly: no fallback here

SERVICE = "rg.Test"


def identity(b):
    return b


def unary(request, context):
    context.set_trailing_metadata((("x-trail", "unary-done"),))
    return b"echo:" + request


def fail(request, context):
    context.set_trailing_metadata((("x-why", "because"),))
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode())


def stream(request, context):
    n = int(request.decode())
    for i in range(n):
        yield ("item-%d" % i).encode()
    context.set_trailing_metadata((("x-count", str(n)),))


def chat(requests, context):
    for m in requests:
        yield b"echo:" + m
    context.set_trailing_metadata((("x-chat", "done"),))


def slow(request, context):
    time.sleep(5)
    return request


def serve():
    from concurrent import futures

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=identity, response_serializer=identity
        ),
        "Fail": grpc.unary_unary_rpc_method_handler(
            fail, request_deserializer=identity, response_serializer=identity
        ),
        "Chat": grpc.stream_stream_rpc_method_handler(
            chat, request_deserializer=identity, response_serializer=identity
        ),
        "Slow": grpc.unary_unary_rpc_method_handler(
            slow, request_deserializer=identity, response_serializer=identity
        ),
        "Stream": grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=identity, response_serializer=identity
        ),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("PORT %d" % port, flush=True)
    # Until the test closes stdin (or kills this process).
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop(0)), daemon=True).start()
    server.wait_for_termination()


def pairs(metadata):
    return [[k, v if isinstance(v, str) else v.decode("latin-1")] for k, v in (metadata or ())]


def call(target, method, request):
    # No HTTP proxy from the environment between the test and the gateway.
    channel = grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)])
    path = "/%s/%s" % (SERVICE, method)
    out = {"responses": []}
    try:
        if method == "Chat":
            echoed = queue.Queue()

            def messages():
                for i in range(int(request)):
                    yield ("msg-%d" % i).encode()
                    # Only after the echo: a gateway holding the request stream back would
                    # deadlock the call here (and fail it with DEADLINE_EXCEEDED).
                    echoed.get(timeout=9)

            it = channel.stream_stream(path, request_serializer=identity,
                                       response_deserializer=identity)(messages(), timeout=10)
            for r in it:
                out["responses"].append(r.decode())
                echoed.put(None)
            rpc = it
        elif method == "Stream":
            it = channel.unary_stream(path, request_serializer=identity,
                                      response_deserializer=identity)(request.encode(), timeout=10)
            for r in it:
                out["responses"].append(r.decode())
            rpc = it
        else:
            fn = channel.unary_unary(path, request_serializer=identity,
                                     response_deserializer=identity)
            resp, rpc = fn.with_call(request.encode(), timeout=10)
            out["responses"].append(resp.decode())
        out.update(code=rpc.code().name, details=rpc.details() or "",
                   initial=pairs(rpc.initial_metadata()), trailing=pairs(rpc.trailing_metadata()))
    except grpc.RpcError as e:
        out.update(code=e.code().name, details=e.details() or "",
                   initial=pairs(e.initial_metadata()), trailing=pairs(e.trailing_metadata()))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve()
    elif sys.argv[1:2] == ["call"] and len(sys.argv) == 5:
        call(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
