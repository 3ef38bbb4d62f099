"""predict on http(s) URLs, through the CLI, from a local http.server on 127.0.0.1 (never the internet): images
and videos are downloaded and named by their URL; a 404, a server that hangs, a file above --max-download and an
answer that is no image are each one line, and the rest of the run is written."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from media_helpers import moving_disc, write_video
from typer.testing import CliRunner

from segcli import io
from segcli.cli import app

runner = CliRunner()


@pytest.fixture
def server(tmp_path):
    """Serves /files/NAME from a folder, and a few misbehaving paths; yields (base URL, folder)."""
    folder = tmp_path / "served"
    folder.mkdir()
    release = threading.Event()  # lets the hanging handler go at teardown

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            name = self.path.lstrip("/").split("?")[0]
            if name == "hang.png":
                release.wait(30)  # no answer at all: the client's timeout must fire
                return
            if name == "page.png":
                return self._send(b"<html>Not found, but said with a 200</html>", "text/html")
            if name == "stream.png":  # no Content-Length: the limit applies while reading
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                self.wfile.write(b"\0" * 64_000)
                return
            path = folder / name
            if not path.is_file():
                self.send_error(404, "Not Found")
                return
            self._send(path.read_bytes(), "image/png" if name == "noext" else "application/octet-stream")

        def _send(self, body: bytes, kind: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", folder
    release.set()
    httpd.shutdown()
    httpd.server_close()


def _image(seed: int, size: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


def _predict(*args):
    return runner.invoke(app, ["predict", *map(str, args), "--device", "cpu", "--quiet"])


def test_urls_of_images_and_videos_are_predicted_and_named_by_their_url(server, tiny_checkpoint, tmp_path, monkeypatch):
    base, folder = server
    io.write_image(folder / "cell.png", _image(0))
    io.write_image(folder / "noext", _image(1))  # no extension: the content type (image/png) says what it is
    write_video(folder / "clip.avi", moving_disc(3))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    out = tmp_path / "out"
    urls = [f"{base}/cell.png", f"{base}/noext", f"{base}/clip.avi"]
    result = _predict(*urls, "--weights", tiny_checkpoint, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["input"], r.get("frame")) for r in records] == [(urls[0], None), (urls[1], None),
                                                               *[(urls[2], i) for i in range(3)]]
    assert io.read_label_png(out / "semantic" / "cell.png").shape == (40, 40)
    assert (out / "semantic" / "noext.png").is_file() and (out / "semantic" / "clip" / "000002.png").is_file()
    parts = [io.read_json(p) for p in (out / ".parts" / "semantic").rglob("*.json")]
    assert {p["source"] for p in parts} == set(urls)  # a resumed run knows them by their URL
    assert list((tmp_path / "tmp").iterdir()) == []  # the downloads are removed at the end
    again = _predict(*urls, "--weights", tiny_checkpoint, "--out", out, "--json", "--skip-existing")
    assert all(json.loads(line).get("skipped") for line in again.stdout.splitlines())


def test_each_bad_url_is_one_line_and_the_good_ones_are_written(server, tiny_checkpoint, tmp_path):
    base, folder = server
    io.write_image(folder / "good.png", _image(2))
    io.write_image(folder / "large.png", _image(3, size=120))  # about 43 KB of noise, above 20K
    (folder / "broken.png").write_bytes(b"served as a PNG, but no image format's bytes" * 8)
    bad = {f"{base}/missing.png": "HTTP 404 Not Found",
           f"{base}/hang.png": "no answer within 1 s",
           f"{base}/large.png": "above --max-download 20 KB",
           f"{base}/stream.png": "more than 20 KB, above --max-download 20 KB",
           f"{base}/page.png": "not an image or a video (the server sent text/html)",
           f"{base}/broken.png": "not an image OpenCV can decode",
           "http://127.0.0.1:9/refused.png": "cannot connect"}
    out = tmp_path / "out"
    began = time.monotonic()
    result = _predict(f"{base}/good.png", *bad, "--weights", tiny_checkpoint, "--out", out, "--download-timeout", "1",
                      "--max-download", "20K")
    assert time.monotonic() - began < 25  # the hanging server cost about its timeout, not more
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == len(bad), lines  # one line per bad URL, nothing else
    for url, message in bad.items():
        (line,) = [line for line in lines if url in line]
        assert message in line, line
        assert "segcli-download" not in line  # named by its URL, not the temporary file
    assert io.read_label_png(out / "semantic" / "good.png").shape == (40, 40)


@pytest.mark.parametrize("value", ["big", "0", "-5M"])
def test_a_max_download_that_is_no_size_is_a_usage_error(tiny_checkpoint, tmp_path, value):
    result = _predict("http://127.0.0.1:9/a.png", "--weights", tiny_checkpoint, "--out", tmp_path / "out",
                      "--max-download", value)
    assert result.exit_code == 2 and "--max-download" in result.stderr
