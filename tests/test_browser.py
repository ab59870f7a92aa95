"""Self-tests of the headless-Chromium harness (tests/browser.py): it must see what a page really requests."""

import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import browser
from browser import external_requests, open_page

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


class LoopbackServer:
    """An HTTP server on 127.0.0.1 that records the paths it is asked for."""

    def __init__(self):
        self.seen: list[str] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append(self.path)
                html = self.path.endswith(".html")
                body = b"<img src='/inner.png'>" if html else PNG_SIGNATURE
                self.send_response(200)
                self.send_header("Content-Type", "text/html" if html else "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()


@pytest.fixture
def server():
    s = LoopbackServer()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()
    s.thread.join(5)


def html_file(tmp_path, head="", body="", name="page.html"):
    path = tmp_path / name
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'>{head}</head><body>{body}</body></html>")
    return path


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR", "the first PNG chunk is not IHDR"
    return struct.unpack(">II", data[16:24])


def test_clean_page_dom_no_requests_and_full_page_screenshot(tmp_path):
    svg = ("<svg id='plot' xmlns='http://www.w3.org/2000/svg' width='600' height='1500'>"
           "<rect width='600' height='1500' fill='#36c'/><text x='10' y='40'>accuracy 0.93</text></svg>")
    path = html_file(tmp_path, head=f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
                     body=f"<h1>Frugal report</h1>{svg}")
    page = open_page(path, screenshot=tmp_path / "shot.png")

    assert "<h1>Frugal report</h1>" in page.dom
    assert "<svg id=\"plot\"" in page.dom and "accuracy 0.93</text>" in page.dom
    assert page.requests == [path.resolve().as_uri()]  # the document itself, nothing else
    assert external_requests(page) == [] and page.failed == [] and page.console == []
    assert page.screenshot == tmp_path / "shot.png"
    width, height = png_size(page.screenshot.read_bytes())
    assert width > 0 and height >= 1500  # the whole page, beyond the 900 px viewport


def test_sees_a_real_request_to_a_loopback_server(tmp_path, server):
    url = f"http://127.0.0.1:{server.port}/pixel.png"
    page = open_page(html_file(tmp_path, body=f"<img src='{url}'>"))

    assert external_requests(page) == [url]
    assert server.seen == ["/pixel.png"]


def test_sees_requests_of_a_cross_site_iframe(tmp_path, server):
    # localhost is another site than the file:// page: the frame runs in its own process (its own target)
    frame = f"http://localhost:{server.port}/frame.html"
    page = open_page(html_file(tmp_path, body=f"<iframe src='{frame}'></iframe>"))

    assert sorted(server.seen) == ["/frame.html", "/inner.png"]
    assert external_requests(page) == [frame, f"http://localhost:{server.port}/inner.png"]


def test_csp_blocks_the_request_and_the_harness_still_reports_the_attempt(tmp_path, server):
    url = f"http://127.0.0.1:{server.port}/pixel.png"
    head = f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
    page = open_page(html_file(tmp_path, head=head, body=f"<img src='{url}'>"))

    assert server.seen == []  # nothing left the browser
    # Chromium announces the request (Network.requestWillBeSent), then fails it (blockedReason "csp"), so a
    # blocked attempt still counts as an external request: "no external requests" is strict even under a CSP.
    assert external_requests(page) == [url] and page.failed == [url]
    assert any("Content Security Policy" in line and url in line for line in page.console), page.console


def test_a_missing_file_is_an_error_not_an_empty_page(tmp_path):
    with pytest.raises(RuntimeError, match="ERR_FILE_NOT_FOUND"):
        open_page(tmp_path / "missing.html")


def test_a_missing_browser_fails_and_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(browser, "CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(RuntimeError, match="run `make chromium`"):
        open_page(html_file(tmp_path))
