"""A small HTTP server on 127.0.0.1 that plays the image hosts an `input_reference[image_url]`
may point at: a good image, one too large (declared or streamed), one that never answers in time,
a redirect, a 404, and something that is not an image."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


def png_bytes(size: tuple[int, int] = (32, 16), colour: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class ImageHost:
    base_url: str
    image: bytes
    too_large_bytes: int
    slow_s: float
    requests: list[str]
    hung_up: threading.Event  # a client left /drip-headers before it had all the headers

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


@contextmanager
def serve_images(
    *, image: bytes, too_large_bytes: int, slow_s: float = 5.0, drip_s: float = 0.1
) -> Iterator[ImageHost]:
    """Paths: /image.png, /declared-too-large, /streamed-too-large (no Content-Length), /slow
    (headers after `slow_s`), /drip (the image in tenths, 0.25 s apart), /drip-headers (the
    status line and headers one byte every `drip_s`, then the image), /redirect (to /image.png),
    /missing (404), /text."""
    requests: list[str] = []
    hung_up = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet test output
            pass

        def do_GET(self) -> None:
            requests.append(self.path)
            if self.path == "/image.png":
                self._answer(200, image, "image/png")
            elif self.path == "/declared-too-large":
                self._answer(200, b"\0" * too_large_bytes, "image/png")
            elif self.path == "/streamed-too-large":
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("connection", "close")
                self.end_headers()
                for _ in range(too_large_bytes // 65536 + 1):
                    try:
                        self.wfile.write(b"\0" * 65536)
                    except OSError:  # the client hung up once it had seen enough
                        return
            elif self.path == "/slow":
                time.sleep(slow_s)
                self._answer(200, image, "image/png")
            elif self.path == "/drip":
                # Each piece in time for a read timeout, the whole well past any overall limit.
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("content-length", str(len(image)))
                self.end_headers()
                pieces = [image[index : index + len(image) // 10 + 1] for index in range(0, len(image), len(image) // 10 + 1)]
                for piece in pieces:
                    try:
                        self.wfile.write(piece)
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(0.25)
            elif self.path == "/drip-headers":
                # The status line and headers a byte at a time: each in time for any read
                # timeout, the whole (some 60 bytes) long past any overall limit.
                head = f"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: {len(image)}\r\n\r\n"
                self.close_connection = True
                for index in range(len(head)):
                    try:
                        self.wfile.write(head[index].encode())
                        self.wfile.flush()
                    except OSError:
                        hung_up.set()
                        return
                    time.sleep(drip_s)
                try:
                    self.wfile.write(image)
                except OSError:
                    pass
            elif self.path == "/redirect":
                self.send_response(302)
                self.send_header("location", "/image.png")
                self.send_header("content-length", "0")
                self.end_headers()
            elif self.path == "/text":
                self._answer(200, b"<html>not an image</html>", "image/png")
            else:
                self._answer(404, b"not found", "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ImageHost(f"http://127.0.0.1:{server.server_port}", image, too_large_bytes, slow_s, requests, hung_up)
    finally:
        server.shutdown()
        server.server_close()
