"""moto's S3 server with one request at a time: ``python tests/moto_serial.py HOST PORT``.

``python -m moto.server`` serves each request on its own thread, and its conditional put checks
``If-Match`` / ``If-None-Match`` and stores the object as two steps with nothing between them held: two
writers that read the same pointer can both pass the check, and one write is lost (seen once in the
suite: six concurrent promotions kept five). AWS S3 and MinIO apply the check and the write as one. A
lock around each request gives moto the same guarantee, so a lost update in the tests is ours.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def serialised(app: Callable[..., Iterable[bytes]]) -> Callable[..., list[bytes]]:
    lock = threading.Lock()

    def one_at_a_time(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with lock:  # the body is read, the check made and the object stored before the next request
            return list(app(environ, start_response))

    return one_at_a_time


def main(host: str, port: int) -> None:
    os.environ.setdefault("MOTO_PORT", str(port))  # as moto.server sets it (its presigned URLs use it)
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, serialised(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
