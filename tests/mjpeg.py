"""A multipart MJPEG stream over HTTP (what IP cameras serve) of real video frames, that can stall."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import cv2


def real_jpegs(assets_dir: Path, n: int = 10) -> list[bytes]:
    """The first ``n`` frames of the shared pedestrians video, 320x180 JPEGs."""
    cap = cv2.VideoCapture(str(assets_dir / "video" / "pedestrians_crossing_640x360.mp4"))
    jpegs = []
    for _ in range(n):
        ok, image = cap.read()
        assert ok
        jpegs.append(cv2.imencode(".jpg", cv2.resize(image, (320, 180)))[1].tobytes())
    cap.release()
    return jpegs


class MjpegServer:
    """A multipart MJPEG stream over HTTP (what IP cameras serve) of real video frames, that can stall."""

    def __init__(self, jpegs: list[bytes]) -> None:
        self.flowing = threading.Event()
        self.flowing.set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for i in range(10**6):
                        while not server.flowing.wait(0.1):
                            pass  # stalled: the connection stays open, nothing is sent
                        jpeg = jpegs[i % len(jpegs)]
                        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(
                            jpeg
                        )
                        self.wfile.write(head + jpeg + b"\r\n")
                        time.sleep(0.04)
                except OSError:
                    pass  # the client went away

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.flowing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
