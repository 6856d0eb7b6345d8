import time
from sec_support import RawSio, live_state, wait_state, http_get

async def test_smoke(make_app, error_log):
    app = await make_app()
    base = live_state(app)
    print(base)
    c = await RawSio.open(app.port)
    await c.connect_ok("alice")
    t = time.perf_counter()
    ack = await c.call("join-document", {"documentId": "d1"})
    print(ack, time.perf_counter() - t)
    t = time.perf_counter()
    ack = await c.call("edit-operation", {"documentId": "d1", "operation": {"x": 1}, "clientOpId": "a"})
    print(ack, time.perf_counter() - t)
    print(live_state(app))
    print(await http_get(app.port, "/healthz"))
    c.ws.close()
    await wait_state(app, base)
    error_log.check()
