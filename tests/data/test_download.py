"""Tests for ichseq.data.download against a local fake PhysioNet server (no network).

The fake serves an in-memory tree under /files/ct-ich/1.3.1/ from a ThreadingHTTPServer on
127.0.0.1, checks HTTP Basic auth, honours Range requests, and has switches for the
failures the downloader must survive: corrupted bytes, connections cut or stalled mid-file, truncated
bodies, no Range support, no SHA256SUMS.txt, forced status codes and redirects.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ichseq.data import download as physionet
from ichseq.data.download import MARKER_FILE, download_dataset, main, resolve_credentials
from ichseq.errors import DownloadError

PREFIX = "/files/ct-ich/1.3.1/"
USER = "alice"
PASSWORD = "pw-Zq8xSecret"
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
DUA_URL = "https://physionet.org/content/ct-ich/1.3.1/"
CSV = "hemorrhage_diagnosis_raw_ct.csv"
SCAN = "ct_scans/049.nii"
MASK = "masks/049.nii"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakePhysioNet:
    """In-memory dataset plus behaviour switches; ``requests`` records what the client sent."""

    def __init__(self) -> None:
        rng = random.Random(49)
        self.files = {
            CSV: b"PatientNumber,SliceNumber,Intraventricular\n49,1,0\n49,2,1\n",
            SCAN: rng.randbytes(6000),
            MASK: rng.randbytes(3001),
        }
        self.credentials = (USER, PASSWORD)
        self.serve_sums = True
        self.sums_text: str | None = None  # overrides the generated SHA256SUMS.txt
        self.force_status: int | None = None  # answer every authenticated request with this
        self.corrupt: set[str] = set()  # serve these with their first byte flipped
        self.cut: dict[str, int] = {}  # relpath -> how many GETs to cut after half the body
        self.stall: dict[str, int] = {}  # relpath -> how many GETs to stall after half the body
        self.release = threading.Event()  # ends the stalls (set when the test is over)
        self.truncate: set[str] = set()  # GET sends half the file (with a matching length)
        self.fail: dict[str, list[int]] = {}  # relpath -> statuses for its next GETs
        self.redirect: dict[str, str] = {}  # relpath -> Location
        self.range_support = True
        self.requests: list[tuple[str, str, str | None, bool]] = []
        self.url = ""

    # -- helpers for tests -------------------------------------------------------------
    def gets(self, relpath: str) -> list[str | None]:
        """Range headers of the GET requests for ``relpath`` (None where no Range)."""
        return [rng for method, path, rng, _ in self.requests if method == "GET" and path == PREFIX + relpath]

    def sums(self) -> str:
        if self.sums_text is not None:
            return self.sums_text
        return "".join(f"{_sha(data)}  {rel}\n" for rel, data in sorted(self.files.items()))

    # -- request handling --------------------------------------------------------------
    def handle(self, req: BaseHTTPRequestHandler, head: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(req.path).path)
        auth = req.headers.get("Authorization")
        self.requests.append((req.command, path, req.headers.get("Range"), auth is not None))
        expected = "Basic " + base64.b64encode("{}:{}".format(*self.credentials).encode()).decode()
        if auth != expected:
            return self._send(req, 401, b"unauthorized", head, {"WWW-Authenticate": 'Basic realm="PhysioNet"'})
        if self.force_status:
            return self._send(req, self.force_status, b"nope", head)
        if not path.startswith(PREFIX):
            return self._send(req, 404, b"not found", head)
        rel = path[len(PREFIX):]
        if rel in self.redirect:
            return self._send(req, 302, b"", head, {"Location": self.redirect[rel]})
        if rel in ("SHA256SUMS.txt", "sums-moved.txt"):
            if not self.serve_sums:
                return self._send(req, 404, b"not found", head)
            return self._send(req, 200, self.sums().encode(), head, {"Content-Type": "text/plain"})
        if rel == "" or rel.endswith("/"):
            return self._listing(req, rel, head)
        if rel not in self.files:
            return self._send(req, 404, b"not found", head)
        if not head and self.fail.get(rel):
            return self._send(req, self.fail[rel].pop(0), b"error", head)
        self._file(req, rel, head)

    def _send(self, req, status, body, head, headers=None) -> None:
        req.send_response(status)
        for name, value in (headers or {}).items():
            req.send_header(name, value)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if not head:
            req.wfile.write(body)

    def _listing(self, req, rel: str, head: bool) -> None:
        children = set()
        for name in self.files:
            if name.startswith(rel):
                rest = name[len(rel):]
                children.add(rest.split("/")[0] + "/" if "/" in rest else rest)
        if not children:
            return self._send(req, 404, b"not found", head)
        # Links the crawler must ignore, as in real listings and PhysioNet pages.
        noise = ["../", "?C=N;O=D", "?C=S;O=A", "#top", "/about/", "http://elsewhere.invalid/x.nii",
                 "mailto:someone@example.org", PREFIX + "../other/"]
        links = "".join(f'<li><a href="{href}">{href}</a></li>' for href in noise + sorted(children))
        html = f"<html><body><h1>Index of {PREFIX}{rel}</h1><ul>{links}</ul></body></html>"
        self._send(req, 200, html.encode(), head, {"Content-Type": "text/html; charset=utf-8"})

    def _file(self, req, rel: str, head: bool) -> None:
        data = self.files[rel]
        if rel in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if rel in self.truncate and not head:
            data = data[: len(data) // 2]
        start, status, headers = 0, 200, {}
        match = re.fullmatch(r"bytes=(\d+)-", req.headers.get("Range") or "")
        if match and self.range_support and not head:
            start = int(match.group(1))
            if start >= len(data):
                return self._send(req, 416, b"", head, {"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        req.send_response(status)
        for name, value in headers.items():
            req.send_header(name, value)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if head:
            return
        if self.stall.get(rel, 0) > 0:
            # Announce the whole body, send half, then go silent with the connection open.
            self.stall[rel] -= 1
            req.wfile.write(body[: len(body) // 2])
            req.wfile.flush()
            self.release.wait(30)
            req.close_connection = True
            return
        if self.cut.get(rel, 0) > 0:
            # Announce the whole body, send half, hang up: a connection cut mid-file.
            self.cut[rel] -= 1
            req.wfile.write(body[: len(body) // 2])
            req.wfile.flush()
            req.close_connection = True
            return
        req.wfile.write(body)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.server.fake.handle(self, head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self.server.fake.handle(self, head=True)

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


def _start_server():
    fake = FakePhysioNet()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.fake = fake
    # A short poll interval keeps server.shutdown() (and so each test) fast.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    fake.url = f"http://127.0.0.1:{server.server_port}{PREFIX}"
    return fake, server


@pytest.fixture
def fake():
    fake, server = _start_server()
    yield fake
    fake.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No real credentials, no real ~/.netrc, no retry sleeps."""
    for name in ("PHYSIONET_USERNAME", "PHYSIONET_PASSWORD", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(physionet, "RETRY_DELAY_S", 0.0)


class Run:
    """Calls download_dataset with test defaults, collecting log lines across calls."""

    def __init__(self, fake: FakePhysioNet, dest: Path):
        self.fake, self.dest, self.lines = fake, dest, []

    def __call__(self, **kwargs):
        kwargs.setdefault("credentials", (USER, PASSWORD))
        kwargs.setdefault("timeout", 2.0)
        kwargs.setdefault("retries", 3)
        return download_dataset(self.dest, self.fake.url, log=self.lines.append, **kwargs)

    def fails(self, **kwargs) -> str:
        with pytest.raises(DownloadError) as info:
            self(**kwargs)
        message = str(info.value)
        assert "\n" not in message
        self.assert_no_secrets(message)
        return message

    def assert_no_secrets(self, *texts: str) -> None:
        for text in (*self.lines, *texts):
            assert PASSWORD not in text and TOKEN not in text
        for path in self.dest.rglob("*") if self.dest.exists() else []:
            if path.is_file():
                data = path.read_bytes()
                assert PASSWORD.encode() not in data and TOKEN.encode() not in data, path


@pytest.fixture
def run(fake, tmp_path):
    return Run(fake, tmp_path / "data")


def _assert_tree(dest: Path, fake: FakePhysioNet) -> None:
    for rel, data in fake.files.items():
        assert (dest / rel).read_bytes() == data, rel
    assert not list(dest.rglob("*.part"))


# -- downloads with SHA256SUMS.txt ------------------------------------------------------


def test_download_with_checksums(run, fake):
    summary = run()
    total = sum(len(data) for data in fake.files.values())
    assert summary == {"files": 3, "downloaded": 3, "skipped": 0, "bytes": total, "verified_by": "sha256"}
    _assert_tree(run.dest, fake)
    marker = json.loads((run.dest / MARKER_FILE).read_text())
    assert marker["url"] == fake.url and marker["files"] == 3 and marker["verified_by"] == "sha256"
    assert marker["completed_at"]
    assert (run.dest / "SHA256SUMS.txt").read_text() == fake.sums()
    assert all(has_auth for *_, has_auth in fake.requests)  # sent preemptively, no 401 round trip
    assert any(SCAN in line and "5.9 KiB" in line for line in run.lines)
    run.assert_no_secrets()


def test_second_run_skips_verified_files(run, fake):
    run()
    fake.requests.clear()
    summary = run()
    assert summary["downloaded"] == 0 and summary["skipped"] == 3
    assert [(m, p) for m, p, *_ in fake.requests] == [("GET", PREFIX + "SHA256SUMS.txt")]
    _assert_tree(run.dest, fake)


def test_existing_file_with_wrong_content_is_replaced(run, fake):
    (run.dest / "masks").mkdir(parents=True)
    (run.dest / MASK).write_bytes(b"stale")
    summary = run()
    assert summary["downloaded"] == 3 and summary["skipped"] == 0
    _assert_tree(run.dest, fake)


def test_checksum_mismatch_keeps_no_file(run, fake):
    fake.corrupt.add(MASK)
    message = run.fails()
    assert message.startswith(f"checksum mismatch for {MASK}: expected {_sha(fake.files[MASK])}, got ")
    assert len(fake.gets(MASK)) == 2  # retried once from scratch, then gave up
    assert fake.gets(MASK) == [None, None]
    assert not (run.dest / MASK).exists()
    assert not (run.dest / (MASK + ".part")).exists()
    assert not (run.dest / MARKER_FILE).exists()


def test_corruption_fixed_on_retry_from_scratch(run, fake):
    class OnceCorrupt(set):
        def __contains__(self, item):
            if super().__contains__(item):
                self.discard(item)
                return True
            return False

    fake.corrupt = OnceCorrupt({SCAN})
    assert run()["downloaded"] == 3
    assert len(fake.gets(SCAN)) == 2
    assert any("checksum mismatch" in line and "again from scratch" in line for line in run.lines)
    _assert_tree(run.dest, fake)


# -- access errors ----------------------------------------------------------------------


def test_wrong_password_gives_dua_message(run, fake):
    message = run.fails(credentials=(USER, "wrong-password-123"))
    assert "wrong-password-123" not in message
    assert "401" in message and "SHA256SUMS.txt" in message
    assert "credentialed access" in message and "data-use agreement" in message
    assert DUA_URL in message and "~/.netrc" in message
    assert len(fake.requests) == 1  # an access error is final: no retries


def test_forbidden_gives_dua_message(run, fake):
    (run.dest).mkdir(parents=True)
    (run.dest / MARKER_FILE).write_text("{}")
    fake.force_status = 403
    message = run.fails()
    assert "403" in message and "data-use agreement" in message and DUA_URL in message
    assert not (run.dest / MARKER_FILE).exists()  # stale marker removed


def test_403_on_a_file_names_the_file(run, fake):
    fake.fail[SCAN] = [403]
    message = run.fails()
    assert SCAN in message and "403" in message and "data-use agreement" in message


@pytest.mark.parametrize("status", [401, 403])
def test_access_errors_are_not_retried(run, fake, status):
    fake.fail[SCAN] = [status] * 3
    message = run.fails(retries=3)
    assert str(status) in message and "data-use agreement" in message
    assert len(fake.gets(SCAN)) == 1


def test_missing_file_names_it(run, fake):
    fake.sums_text = fake.sums() + f"{'0' * 64}  ct_scans/050.nii\n"
    message = run.fails()
    assert "ct_scans/050.nii" in message and "404" in message


def test_server_errors_are_retried(run, fake):
    fake.fail[SCAN] = [500, 503]
    assert run(retries=3)["downloaded"] == 3
    _assert_tree(run.dest, fake)


def test_server_errors_give_up_after_retries(run, fake):
    fake.fail[SCAN] = [500, 502, 500]
    message = run.fails(retries=2)
    assert SCAN in message and "after 2 attempt(s)" in message and "HTTP 502" in message


def test_connection_refused_names_url(tmp_path):
    run = Run(FakePhysioNet(), tmp_path / "data")
    run.fake.url = "http://127.0.0.1:1" + PREFIX  # nothing listens on port 1
    message = run.fails(retries=2)
    assert "SHA256SUMS.txt" in message and run.fake.url in message and "2 attempt(s)" in message


@pytest.mark.parametrize("bad", ["../evil.txt", "/etc/passwd", "ct_scans/../../evil.txt", "C:/evil.txt"])
def test_unsafe_paths_in_checksum_file_are_refused(run, fake, bad):
    fake.sums_text = fake.sums() + f"{'a' * 64}  {bad}\n"
    message = run.fails()
    assert bad in message and "SHA256SUMS.txt line 4" in message
    assert not run.dest.parent.joinpath("evil.txt").exists()
    assert not (run.dest / CSV).exists()  # refused before any download


def test_malformed_checksum_line(run, fake):
    fake.sums_text = "not a checksum line\n"
    assert "SHA256SUMS.txt line 1 is malformed" in run.fails()


def test_unresponsive_server_times_out(tmp_path):
    """A server that accepts connections but never answers ends in an error, not a hang."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never accepts or answers
        run = Run(FakePhysioNet(), tmp_path / "data")
        run.fake.url = f"http://127.0.0.1:{silent.getsockname()[1]}{PREFIX}"
        message = run.fails(retries=2, timeout=0.2)
    assert "SHA256SUMS.txt" in message and "after 2 attempt(s)" in message and "timed out" in message


# -- resume -----------------------------------------------------------------------------


def test_resume_within_one_call(run, fake):
    fake.cut[SCAN] = 1
    assert run(retries=3)["downloaded"] == 3
    half = len(fake.files[SCAN]) // 2
    assert fake.gets(SCAN) == [None, f"bytes={half}-"]
    assert any(f"resuming at byte {half}" in line for line in run.lines)
    _assert_tree(run.dest, fake)


def test_resume_across_calls(run, fake):
    fake.cut[SCAN] = 1
    message = run.fails(retries=1)
    half = len(fake.files[SCAN]) // 2
    assert SCAN in message and "after 1 attempt(s)" in message and "049.nii.part is kept" in message
    assert (run.dest / (SCAN + ".part")).stat().st_size == half
    assert not (run.dest / SCAN).exists()
    assert not (run.dest / MARKER_FILE).exists()

    summary = run(retries=1)
    assert summary["files"] == 3
    assert fake.gets(SCAN) == [None, f"bytes={half}-"]
    _assert_tree(run.dest, fake)
    assert (run.dest / MARKER_FILE).exists()


def test_stalled_transfer_times_out_and_resumes(run, fake):
    fake.stall[SCAN] = 1
    assert run(retries=2, timeout=0.3)["downloaded"] == 3
    half = len(fake.files[SCAN]) // 2
    assert fake.gets(SCAN) == [None, f"bytes={half}-"]
    assert any(SCAN in line and "timed out" in line for line in run.lines)
    _assert_tree(run.dest, fake)


def test_server_without_range_support_restarts_from_zero(run, fake):
    fake.range_support = False
    part = run.dest / (SCAN + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that must not survive")
    run()
    assert fake.gets(SCAN) == ["bytes=29-"]
    assert any("restarting from zero" in line for line in run.lines)
    _assert_tree(run.dest, fake)


def test_complete_part_is_verified_not_refetched(run, fake):
    part = run.dest / (MASK + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(fake.files[MASK])  # e.g. a run killed between download and rename
    run()
    assert fake.gets(MASK) == [f"bytes={len(fake.files[MASK])}-"]  # answered 416
    _assert_tree(run.dest, fake)


# -- fallback: HTML listing and sizes ----------------------------------------------------


def test_fallback_crawls_listing_and_checks_sizes(run, fake):
    fake.serve_sums = False
    summary = run()
    assert summary["verified_by"] == "size" and summary["files"] == 3 and summary["downloaded"] == 3
    _assert_tree(run.dest, fake)
    paths = {path for _, path, *_ in fake.requests}
    assert paths == {PREFIX + p for p in ["SHA256SUMS.txt", "", "ct_scans/", "masks/", CSV, SCAN, MASK]}
    assert {(m, p) for m, p, *_ in fake.requests if m == "HEAD"} == {("HEAD", PREFIX + r) for r in fake.files}
    marker = json.loads((run.dest / MARKER_FILE).read_text())
    assert marker["verified_by"] == "size"

    fake.requests.clear()
    assert run()["skipped"] == 3
    assert not [p for m, p, *_ in fake.requests if m == "GET" and p.endswith(".nii")]
    run.assert_no_secrets()


def test_fallback_rejects_truncated_body(run, fake):
    fake.serve_sums = False
    fake.truncate.add(SCAN)  # HEAD reports 6000 bytes, GET delivers (and announces) 3000
    message = run.fails()
    assert message.startswith(f"size mismatch for {SCAN}: expected 6000 bytes")
    assert "got 3000" in message
    assert not (run.dest / SCAN).exists() and not (run.dest / (SCAN + ".part")).exists()


def test_fallback_resumes_after_cut(run, fake):
    fake.serve_sums = False
    fake.cut[MASK] = 1
    run()
    assert fake.gets(MASK) == [None, f"bytes={len(fake.files[MASK]) // 2}-"]
    _assert_tree(run.dest, fake)


# -- redirects --------------------------------------------------------------------------


def test_same_origin_redirect_keeps_auth(run, fake):
    fake.redirect["SHA256SUMS.txt"] = PREFIX + "sums-moved.txt"
    assert run()["verified_by"] == "sha256"


def test_cross_origin_redirect_drops_auth(run, fake):
    other, server = _start_server()
    try:
        fake.redirect["SHA256SUMS.txt"] = other.url + "SHA256SUMS.txt"
        message = run.fails()
        assert "data-use agreement" in message  # the other host answered 401
        assert other.requests and not any(has_auth for *_, has_auth in other.requests)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("entry", ["machine 127.0.0.1", "default"])
def test_redirect_elsewhere_gets_no_netrc_credentials(run, fake, tmp_path, monkeypatch, entry):
    """A netrc entry that matches the redirect target (same host, other port; or 'default') is not sent there."""
    monkeypatch.setenv("NETRC", str(_netrc(tmp_path / "netrc", f"{entry} login {USER} password {PASSWORD}\n")))
    other, server = _start_server()
    try:
        fake.redirect["SHA256SUMS.txt"] = other.url + "SHA256SUMS.txt"
        assert "data-use agreement" in run.fails(credentials=None)
        assert fake.requests[0][3] and other.requests and not any(has_auth for *_, has_auth in other.requests)
    finally:
        server.shutdown()
        server.server_close()


# -- credentials ------------------------------------------------------------------------


def _netrc(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_credentials_from_env():
    env = {"PHYSIONET_USERNAME": "bob", "PHYSIONET_PASSWORD": "envpw"}
    assert resolve_credentials("https://physionet.org/files/ct-ich/1.3.1/", env=env) == ("bob", "envpw")


def test_env_takes_precedence_over_netrc(tmp_path):
    rc = _netrc(tmp_path / "netrc", "machine physionet.org login carol password rcpw\n")
    env = {"PHYSIONET_USERNAME": "bob", "PHYSIONET_PASSWORD": "envpw"}
    assert resolve_credentials(physionet.DEFAULT_URL, env=env, netrc_path=str(rc)) == ("bob", "envpw")


def test_credentials_from_netrc_path(tmp_path):
    rc = _netrc(tmp_path / "netrc", "machine other.org login x password y\nmachine physionet.org login carol password rcpw\n")
    assert resolve_credentials(physionet.DEFAULT_URL, env={}, netrc_path=str(rc)) == ("carol", "rcpw")


def test_credentials_from_netrc_env_var_and_home(tmp_path):
    rc = _netrc(tmp_path / "custom-netrc", "machine physionet.org login dave password p1\n")
    assert resolve_credentials(physionet.DEFAULT_URL, env={"NETRC": str(rc)}) == ("dave", "p1")
    _netrc(Path(os.environ["HOME"]) / ".netrc", "machine physionet.org login erin password p2\n")
    assert resolve_credentials(physionet.DEFAULT_URL, env={}) == ("erin", "p2")


def test_missing_credentials_message(tmp_path):
    with pytest.raises(DownloadError) as info:
        resolve_credentials(physionet.DEFAULT_URL, env={}, netrc_path=str(tmp_path / "absent"))
    message = str(info.value)
    assert "PHYSIONET_USERNAME" in message and "PHYSIONET_PASSWORD" in message
    assert "machine physionet.org login" in message and "~/.netrc" in message


def test_netrc_without_entry_for_host(tmp_path):
    rc = _netrc(tmp_path / "netrc", "machine example.org login x password y\n")
    with pytest.raises(DownloadError, match="no PhysioNet credentials for physionet.org"):
        resolve_credentials(physionet.DEFAULT_URL, env={}, netrc_path=str(rc))


def test_only_one_env_variable_is_an_error():
    with pytest.raises(DownloadError, match="PHYSIONET_USERNAME is set but PHYSIONET_PASSWORD is not"):
        resolve_credentials(physionet.DEFAULT_URL, env={"PHYSIONET_USERNAME": "bob"})


def test_malformed_netrc_does_not_echo_password(tmp_path):
    rc = _netrc(tmp_path / "netrc", f"machine physionet.org login alice {PASSWORD}\n")
    with pytest.raises(DownloadError) as info:
        resolve_credentials(physionet.DEFAULT_URL, env={}, netrc_path=str(rc))
    assert "cannot parse netrc file" in str(info.value) and PASSWORD not in str(info.value)


def test_download_reads_netrc(run, fake, tmp_path, monkeypatch):
    rc = _netrc(tmp_path / "netrc", f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    monkeypatch.setenv("NETRC", str(rc))
    assert run(credentials=None)["downloaded"] == 3
    run.assert_no_secrets()


def test_download_reads_env(run, fake, monkeypatch):
    monkeypatch.setenv("PHYSIONET_USERNAME", USER)
    monkeypatch.setenv("PHYSIONET_PASSWORD", PASSWORD)
    assert run(credentials=None)["downloaded"] == 3


def test_download_without_credentials_fails_before_any_request(run, fake):
    message = run.fails(credentials=None)
    assert "PHYSIONET_USERNAME" in message and "machine 127.0.0.1 login" in message
    assert fake.requests == []


def test_credentials_in_url_are_refused(tmp_path):
    with pytest.raises(DownloadError) as info:
        download_dataset(tmp_path, f"https://{USER}:{PASSWORD}@physionet.org/files/ct-ich/1.3.1/", log=lambda _: None)
    assert PASSWORD not in str(info.value) and "must not contain credentials" in str(info.value)


# -- command line -----------------------------------------------------------------------


def test_main_success_and_failure(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PHYSIONET_USERNAME", USER)
    monkeypatch.setenv("PHYSIONET_PASSWORD", "not-the-password")
    assert main([str(tmp_path / "d"), "--url", fake.url, "--retries", "1", "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "data-use agreement" in err
    assert "not-the-password" not in err

    monkeypatch.setenv("PHYSIONET_PASSWORD", PASSWORD)
    assert main([str(tmp_path / "d"), "--url", fake.url, "--timeout", "2"]) == 0
    out = capsys.readouterr().out
    assert PASSWORD not in out and json.loads(out.strip().splitlines()[-1])["files"] == 3
    _assert_tree(tmp_path / "d", fake)
