"""Download the restricted-access PhysioNet dataset CT-ICH v1.3.1 using only the standard library.

Design
------
Credentials
    Read from ``PHYSIONET_USERNAME``/``PHYSIONET_PASSWORD`` or from a netrc entry for the
    dataset host (``~/.netrc``, the ``NETRC`` variable, or an explicit path), never from the
    workflow configuration: configs are committed, copied into reports and shared. They are
    sent preemptively as an HTTP Basic ``Authorization`` header (one round trip per file
    instead of two, and independent of whether the server sends a challenge). The header is
    only re-sent after a redirect that stays on the same scheme, host and port, and no log
    line, exception message or written file ever contains it or the password.

File list and integrity
    ``SHA256SUMS.txt`` at the dataset URL, when the server has it, defines both the file list
    and the checksums. Without it (HTTP 404) the HTML directory listings are crawled (only
    links below the dataset URL are followed) and each file is verified against the size the
    server reports for it (``Content-Length`` of a HEAD request, or of the download itself).
    Every path is checked to be relative and free of ``..`` before it touches the disk.

Resumable, atomic files
    A file is streamed into ``<dest>/<relpath>.part``. An existing ``.part`` is continued
    with a ``Range`` request (appended on 206, restarted on 200). Only a verified ``.part`` is
    renamed with :func:`os.replace` to its final name, so a final name always means a verified
    file, and a ``.part`` is always safe to resume or delete. A connection cut keeps the
    ``.part`` (the next attempt, in this call or the next one, resumes from it); a failed
    verification deletes it and downloads once more from scratch before giving up.

Completion marker
    After every file is verified, ``<dest>/.ichseq-download-complete`` (JSON) is written
    atomically; it is removed at the start of each run, so a pipeline rule can depend on it
    and never sees a half-finished or failed download as done.

Errors
    Every failure raises :class:`ichseq.errors.DownloadError` with one line naming the file
    (relative path or credential-free URL) and what to do about it.

Command line: ``python -m ichseq.physionet DEST [--url URL] [--retries N] [--timeout S]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import netrc
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Mapping, TypeVar

from ichseq import __version__
from ichseq.errors import DownloadError
from ichseq.atomic import write_bytes_atomic

__all__ = ["DEFAULT_URL", "DownloadError", "download_dataset", "main", "resolve_credentials"]

DEFAULT_URL = "https://physionet.org/files/ct-ich/1.3.1/"
#: Project page where the data-use agreement is signed.
DUA_URL = "https://physionet.org/content/ct-ich/1.3.1/"
CHECKSUM_FILE = "SHA256SUMS.txt"
MARKER_FILE = ".ichseq-download-complete"
PART_SUFFIX = ".part"
ENV_USERNAME = "PHYSIONET_USERNAME"
ENV_PASSWORD = "PHYSIONET_PASSWORD"

#: Delay before the second attempt; doubled for each further attempt (tests set it to 0).
RETRY_DELAY_S = 1.0
_MAX_RETRY_DELAY_S = 30.0
_CHUNK_BYTES = 1 << 20
# Listings and SHA256SUMS.txt are small; the cap protects memory from a misconfigured server.
_MAX_DOCUMENT_BYTES = 32 << 20

_T = TypeVar("_T")
_SHA_LINE = re.compile(r"([0-9a-fA-F]{64})[ \t]+\*?(\S.*)")
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)
_WINDOWS_DRIVE = re.compile(r"[A-Za-z]:")


# --------------------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------------------


def resolve_credentials(
    url: str, env: Mapping[str, str] | None = None, netrc_path: str | None = None
) -> tuple[str, str]:
    """Return ``(username, password)`` for the host of ``url``.

    Looks at ``PHYSIONET_USERNAME`` and ``PHYSIONET_PASSWORD`` in ``env`` (default
    :data:`os.environ`; both or neither must be set), then at the netrc file given by
    ``netrc_path``, else ``$NETRC``, else ``~/.netrc``. Raises :class:`DownloadError` when
    neither source has credentials for the host.
    """
    env = os.environ if env is None else env
    username = env.get(ENV_USERNAME) or ""
    password = env.get(ENV_PASSWORD) or ""
    if username and password:
        return username, password
    if username or password:
        present, missing = (
            (ENV_USERNAME, ENV_PASSWORD) if username else (ENV_PASSWORD, ENV_USERNAME)
        )
        raise DownloadError(
            f"{present} is set but {missing} is not: set both environment variables, "
            f"or unset both and put the credentials in ~/.netrc"
        )

    host = urllib.parse.urlsplit(url).hostname or ""
    path = netrc_path or env.get("NETRC") or str(Path.home() / ".netrc")
    found = _netrc_lookup(path, host) if os.path.isfile(path) else None
    if found is not None:
        return found
    raise DownloadError(
        f"no PhysioNet credentials for {host or url}: set {ENV_USERNAME} and {ENV_PASSWORD} "
        f"in the environment, or add the line 'machine {host or 'physionet.org'} login USERNAME "
        f"password PASSWORD' to ~/.netrc (chmod 600; looked in {path})"
    )


def _netrc_lookup(path: str, host: str) -> tuple[str, str] | None:
    """Return the netrc login/password for ``host`` (or the ``default`` entry), if any."""
    try:
        entry = netrc.netrc(path).authenticators(host)
    except netrc.NetrcParseError as exc:
        # exc.msg can quote the offending token, which may be a password: report only where.
        raise DownloadError(
            f"cannot parse netrc file {path} near line {exc.lineno}: expected lines like "
            f"'machine {host} login USERNAME password PASSWORD'"
        ) from None
    except OSError as exc:
        raise DownloadError(f"cannot read netrc file {path}: {exc.strerror or exc}") from None
    if entry is None:
        return None
    login, _account, password = entry
    if not login or not password:
        raise DownloadError(
            f"the netrc entry for {host} in {path} needs both 'login' and 'password'"
        )
    return login, password


# --------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------


class _Transient(Exception):
    """A failure worth another attempt (connection cut, timeout, 5xx); one-line message."""


class _HTTPStatus(Exception):
    """A non-2xx answer, detached from urllib's HTTPError so the socket can be closed."""

    def __init__(self, code: int, reason: str, headers: Mapping[str, str]):
        super().__init__(f"HTTP {code} {reason}".strip())
        self.code = code
        self.headers = headers


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default_port


class _SameOriginAuthRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects, re-attaching ``Authorization`` only within the same origin.

    urllib copies ordinary headers onto a redirected request whatever host it names, which
    would hand the credentials to that host. The header is therefore added "unredirected"
    (never copied) and put back here only when scheme, host and port are unchanged.
    """

    def __init__(self, authorization: str):
        super().__init__()
        self._authorization = authorization

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 (urllib API)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(new.full_url) == _origin(req.full_url):
            new.add_unredirected_header("Authorization", self._authorization)
        return new


def _describe(exc: BaseException) -> str:
    """One line describing a network-level failure (never includes request headers)."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        return _describe(exc.reason)
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, http.client.IncompleteRead):
        return (
            f"connection closed early ({len(exc.partial)} bytes received, "
            f"{exc.expected} more expected)"
        )
    if isinstance(exc, TimeoutError):
        return "timed out waiting for the server"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("Content-Length")
    try:
        length = int(value) if value is not None else None
    except ValueError:
        return None
    return length if length is not None and length >= 0 else None


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` from a Content-Range header; None where unknown."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not match:
        return None, None
    first = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return first, total


class _Session:
    """Authenticated requests plus the retry policy shared by every fetch."""

    def __init__(
        self,
        credentials: tuple[str, str],
        *,
        timeout: float,
        retries: int,
        log: Callable[[str], None],
    ):
        username, password = credentials
        token = base64.b64encode(f"{username}:{password}".encode("utf-8")).decode("ascii")
        self._authorization = f"Basic {token}"
        self._opener = urllib.request.build_opener(
            _SameOriginAuthRedirect(self._authorization)
        )
        self.timeout = timeout
        self.retries = retries
        self.log = log

    def open(self, url: str, *, method: str = "GET", offset: int = 0) -> http.client.HTTPResponse:
        """Send one request; raise :class:`_HTTPStatus` or :class:`_Transient` on failure."""
        request = urllib.request.Request(url, method=method)
        request.add_unredirected_header("Authorization", self._authorization)
        request.add_header("User-Agent", f"ichseq/{__version__} (python-urllib)")
        # Identity encoding, so Content-Length and byte offsets count bytes of the file.
        request.add_header("Accept-Encoding", "identity")
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            return self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            status = _HTTPStatus(exc.code, str(exc.reason or ""), exc.headers or {})
            exc.close()
            raise status from None
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
            raise _Transient(_describe(exc)) from exc

    def classify(self, status: _HTTPStatus, what: str, url: str) -> _Transient:
        """Return a retryable error for ``status``, or raise the final DownloadError."""
        if status.code in (401, 403):
            raise DownloadError(
                f"access denied for {what} ({status}): the PhysioNet account must have "
                f"credentialed access and must have signed the data-use agreement for the "
                f"CT-ICH dataset at {DUA_URL}; the username and password are read from "
                f"{ENV_USERNAME}/{ENV_PASSWORD} or from ~/.netrc, check that they are right"
            )
        if status.code in (408, 429) or status.code >= 500:
            return _Transient(str(status))
        raise DownloadError(f"cannot download {what}: the server answered {status} for {url}")

    def retry(
        self,
        what: str,
        url: str,
        attempt_once: Callable[[], _T],
        *,
        hint: Callable[[], str] = lambda: "",
    ) -> _T:
        """Run ``attempt_once`` up to ``retries`` times while it fails transiently."""
        reason = ""
        for attempt in range(1, self.retries + 1):
            try:
                return attempt_once()
            except _HTTPStatus as status:
                reason = str(self.classify(status, what, url))
            except _Transient as exc:
                reason = str(exc)
            if attempt < self.retries:
                delay = min(RETRY_DELAY_S * 2 ** (attempt - 1), _MAX_RETRY_DELAY_S)
                self.log(
                    f"{what}: {reason}; retrying in {delay:.0f} s "
                    f"(attempt {attempt + 1} of {self.retries})"
                )
                time.sleep(delay)
        raise DownloadError(
            f"could not download {what} from {url} after {self.retries} attempt(s): "
            f"{reason}{hint()}"
        )

    def get_document(self, url: str, what: str, *, missing_ok: bool = False) -> str | None:
        """GET a small text document; None on 404 when ``missing_ok``."""

        def attempt_once() -> str | None:
            try:
                response = self.open(url)
            except _HTTPStatus as status:
                if status.code == 404 and missing_ok:
                    return None
                raise
            with response:
                try:
                    # A cut chunked body raises IncompleteRead; a cut body with a
                    # Content-Length just comes back short, hence the check below.
                    body = response.read(_MAX_DOCUMENT_BYTES + 1)
                    expected = _content_length(response.headers)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Transient(_describe(exc)) from exc
                if len(body) > _MAX_DOCUMENT_BYTES:
                    raise DownloadError(f"{what} at {url} is larger than expected; is --url right?")
                if expected is not None and len(body) < expected:
                    raise _Transient(
                        f"connection closed early ({len(body)} of {expected} bytes received)"
                    )
                charset = response.headers.get_content_charset() or "utf-8"
            return body.decode(charset, errors="replace")

        return self.retry(what, url, attempt_once)

    def head_size(self, url: str, what: str) -> int | None:
        """Content-Length from a HEAD request; None if the server does not say."""

        def attempt_once() -> int | None:
            try:
                response = self.open(url, method="HEAD")
            except _HTTPStatus as status:
                if status.code in (405, 501):  # HEAD not supported: use the GET's length
                    return None
                raise
            with response:
                return _content_length(response.headers)

        return self.retry(what, url, attempt_once)


# --------------------------------------------------------------------------------------
# File list
# --------------------------------------------------------------------------------------


@dataclass
class _Entry:
    relpath: str
    url: str
    sha256: str | None = None  # checksum mode
    size: int | None = None  # size mode: expected size from HEAD


def _safe_relpath(raw: str, where: str) -> str:
    """Normalise a dataset path, refusing anything that could escape the destination."""
    if raw.startswith("/") or _WINDOWS_DRIVE.match(raw):
        raise DownloadError(f"{where}: refusing absolute path {raw!r}; dataset paths must be relative")
    components = raw.split("/")
    if ".." in components:
        raise DownloadError(
            f"{where}: refusing path {raw!r} with a '..' component (it would escape the "
            f"destination folder)"
        )
    kept = [part for part in components if part not in ("", ".")]
    if not kept or "\\" in raw or "\x00" in raw:
        raise DownloadError(f"{where}: invalid dataset path {raw!r}")
    return "/".join(kept)


def _parse_checksums(text: str, base_url: str) -> list[_Entry]:
    """Entries from ``<sha256>  <relative/path>`` lines (``sha256sum`` format)."""
    digests: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _SHA_LINE.fullmatch(line)
        if not match:
            raise DownloadError(
                f"{CHECKSUM_FILE} line {lineno} is malformed: expected "
                f"'<64 hex digits>  <relative path>'"
            )
        digest = match.group(1).lower()
        relpath = _safe_relpath(match.group(2), f"{CHECKSUM_FILE} line {lineno}")
        if relpath == CHECKSUM_FILE:
            continue  # a list that covers itself cannot hold its own checksum
        if digests.setdefault(relpath, digest) != digest:
            raise DownloadError(f"{CHECKSUM_FILE} lists {relpath} twice with different checksums")
    if not digests:
        raise DownloadError(f"{CHECKSUM_FILE} at {base_url} lists no files")
    return [
        _Entry(relpath, base_url + urllib.parse.quote(relpath), sha256=digest)
        for relpath, digest in sorted(digests.items())
    ]


class _LinkParser(HTMLParser):
    """Collects the ``href`` of every ``<a>`` tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(value.strip() for name, value in attrs if name == "href" and value)


def _crawl_listing(session: _Session, base_url: str) -> list[_Entry]:
    """Files below ``base_url`` found by following its HTML directory listings.

    Only links that resolve strictly below ``base_url`` on the same scheme and host are
    used: that discards parent links (``../``), site navigation (``/about/``), other hosts
    and column-sorting links (``?C=N;O=D``) without having to recognise each kind.
    """
    base = urllib.parse.urlsplit(base_url)
    queue = deque([base_url])
    seen = {base_url}
    files: dict[str, str] = {}
    while queue:
        dir_url = queue.popleft()
        label = urllib.parse.unquote(dir_url[len(base_url):]) or "./"
        html = session.get_document(dir_url, f"directory listing {label}")
        parser = _LinkParser()
        parser.feed(html or "")
        for href in parser.hrefs:
            target = urllib.parse.urlsplit(urllib.parse.urljoin(dir_url, href))
            if (target.scheme, target.netloc) != (base.scheme, base.netloc) or target.query:
                continue
            if not target.path.startswith(base.path) or target.path == base.path:
                continue
            clean_url = urllib.parse.urlunsplit((target.scheme, target.netloc, target.path, "", ""))
            if target.path.endswith("/"):
                if clean_url not in seen:
                    seen.add(clean_url)
                    queue.append(clean_url)
                continue
            relpath = _safe_relpath(
                urllib.parse.unquote(target.path[len(base.path):]), f"directory listing {label}"
            )
            files.setdefault(relpath, clean_url)
    if not files:
        raise DownloadError(
            f"no {CHECKSUM_FILE} and no files in the directory listing at {base_url}; is the URL right?"
        )
    return [_Entry(relpath, url) for relpath, url in sorted(files.items())]


# --------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _human(size: int | None) -> str:
    if size is None:
        return "size unknown"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # unreachable; keeps type checkers content


class _Downloader:
    def __init__(self, dest: Path, base_url: str, session: _Session, log: Callable[[str], None]):
        self.dest = dest
        self.base_url = base_url
        self.session = session
        self.log = log

    def run(self) -> dict:
        try:
            self.dest.mkdir(parents=True, exist_ok=True)
            marker = self.dest / MARKER_FILE
            # A marker from an earlier run must not vouch for this one if it fails.
            marker.unlink(missing_ok=True)
        except OSError as exc:
            raise DownloadError(f"cannot use destination folder {self.dest}: {exc.strerror or exc}") from None

        checksums = self.session.get_document(
            self.base_url + CHECKSUM_FILE, CHECKSUM_FILE, missing_ok=True
        )
        if checksums is not None:
            entries, verified_by = _parse_checksums(checksums, self.base_url), "sha256"
            # Keep the list next to the data so it can be re-checked offline (sha256sum -c).
            self._write(self.dest / CHECKSUM_FILE, checksums.encode("utf-8"))
        else:
            self.log(f"no {CHECKSUM_FILE} at {self.base_url}; verifying files by size instead")
            entries, verified_by = _crawl_listing(self.session, self.base_url), "size"
        self.log(f"{len(entries)} files at {self.base_url} (verified by {verified_by})")

        downloaded = skipped = 0
        for index, entry in enumerate(entries, start=1):
            prefix = f"[{index}/{len(entries)}] {entry.relpath}"
            final = self.dest / entry.relpath
            if verified_by == "size":
                entry.size = self.session.head_size(entry.url, entry.relpath)
            if final.is_file() and self._is_verified(entry, final):
                skipped += 1
                self.log(f"{prefix}: already present and verified ({_human(final.stat().st_size)}), skipping")
                continue
            self.log(f"{prefix}: downloading" + (f" ({_human(entry.size)})" if entry.size is not None else ""))
            self._download(entry, final)
            downloaded += 1
            self.log(f"{prefix}: done, {_human(final.stat().st_size)} verified by {verified_by}")

        total = sum((self.dest / entry.relpath).stat().st_size for entry in entries)
        record = {
            "url": self.base_url,
            "files": len(entries),
            "verified_by": verified_by,
            "bytes": total,
            "completed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self._write(marker, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
        self.log(
            f"complete: {len(entries)} files ({downloaded} downloaded, {skipped} already "
            f"present), {_human(total)} in {self.dest}"
        )
        return {
            "files": len(entries),
            "downloaded": downloaded,
            "skipped": skipped,
            "bytes": total,
            "verified_by": verified_by,
        }

    def _write(self, path: Path, data: bytes) -> None:
        try:
            write_bytes_atomic(path, data)
        except OSError as exc:
            raise DownloadError(f"cannot write {path}: {exc.strerror or exc}") from None

    def _is_verified(self, entry: _Entry, path: Path) -> bool:
        if entry.sha256 is not None:
            return _sha256_file(path) == entry.sha256
        # In size mode a file of unknown expected size cannot be vouched for: fetch it again.
        return entry.size is not None and path.stat().st_size == entry.size

    def _download(self, entry: _Entry, final: Path) -> None:
        """Fetch ``entry`` into its ``.part``, verify it, and rename it into place."""
        part = final.with_name(final.name + PART_SUFFIX)
        try:
            part.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DownloadError(f"cannot create folder for {entry.relpath}: {exc.strerror or exc}") from None

        def keep_hint() -> str:
            if part.exists():
                return f"; {entry.relpath}{PART_SUFFIX} is kept and the next run resumes from it"
            return ""

        # A verification failure earns exactly one fresh download before giving up.
        for round_ in (1, 2):
            total = self.session.retry(
                entry.relpath, entry.url, lambda: self._fetch_into(entry, part), hint=keep_hint
            )
            problem = self._verification_problem(entry, part, total)
            if problem is None:
                try:
                    os.replace(part, final)
                except OSError as exc:
                    raise DownloadError(f"cannot rename {entry.relpath}{PART_SUFFIX}: {exc.strerror or exc}") from None
                return
            part.unlink(missing_ok=True)  # a bad .part must never be resumed or renamed
            if round_ == 2:
                raise DownloadError(
                    f"{problem} (after downloading it twice from scratch; the server copy or "
                    f"{CHECKSUM_FILE} is corrupt, or a proxy alters it; the bad file was deleted)"
                )
            self.log(f"{problem}; deleting it and downloading {entry.relpath} again from scratch")

    def _verification_problem(self, entry: _Entry, part: Path, server_total: int | None) -> str | None:
        if entry.sha256 is not None:
            got = _sha256_file(part)
            if got == entry.sha256:
                return None
            return f"checksum mismatch for {entry.relpath}: expected {entry.sha256}, got {got}"
        expected = entry.size if entry.size is not None else server_total
        if expected is None:
            raise DownloadError(
                f"cannot verify {entry.relpath}: the server reports no size (Content-Length) "
                f"for it and has no {CHECKSUM_FILE}"
            )
        got = part.stat().st_size
        if got == expected:
            return None
        return (
            f"size mismatch for {entry.relpath}: expected {expected} bytes "
            f"(server Content-Length), got {got}"
        )

    def _fetch_into(self, entry: _Entry, part: Path) -> int | None:
        """One attempt: fill ``part`` up to the end of the file, resuming if possible.

        Returns the total file size the server announced (None if it did not say).
        Raises :class:`_Transient` when the connection fails, leaving ``part`` in place.
        """
        # At most one restart from zero per attempt, for a server that rejects our offset.
        for _ in range(2):
            offset = part.stat().st_size if part.exists() else 0
            try:
                response = self.session.open(entry.url, offset=offset)
            except _HTTPStatus as status:
                if status.code == 416 and offset:
                    _, total = _parse_content_range(status.headers.get("Content-Range"))
                    if total == offset:
                        return total  # the .part is already complete; verification decides
                    self._discard(part, f"{entry.relpath}: server cannot resume at byte {offset}")
                    continue
                raise
            with response:
                if response.status == 206:
                    first, total = _parse_content_range(response.headers.get("Content-Range"))
                    if first != offset:
                        self._discard(part, f"{entry.relpath}: server sent an unexpected range")
                        continue
                    if offset:
                        self.log(f"{entry.relpath}: resuming at byte {offset}")
                elif response.status == 200:
                    if offset:
                        self.log(
                            f"{entry.relpath}: server ignored the resume request; restarting from zero"
                        )
                    offset, total = 0, _content_length(response.headers)
                else:
                    raise _Transient(f"unexpected HTTP {response.status} {response.reason}")
                self._stream(response, part, append=offset > 0)
                return total
        raise _Transient("server did not accept resuming or restarting the download")

    def _discard(self, part: Path, why: str) -> None:
        self.log(f"{why}; restarting from zero")
        part.unlink(missing_ok=True)

    def _stream(self, response: http.client.HTTPResponse, part: Path, *, append: bool) -> None:
        """Copy the response body into ``part``; a short body raises :class:`_Transient`."""
        expected = _content_length(response.headers)
        received = 0
        try:
            handle = open(part, "ab" if append else "wb")
        except OSError as exc:
            raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from None
        with handle:
            while True:
                try:
                    chunk = response.read(_CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Transient(_describe(exc)) from exc
                if not chunk:
                    break
                try:
                    handle.write(chunk)
                except OSError as exc:  # local failure (disk full...): retrying will not help
                    raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from None
                received += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        # http.client's read(n) returns b"" when the server hangs up early instead of
        # raising, so a cut is only visible as a body shorter than its Content-Length.
        if expected is not None and received < expected:
            raise _Transient(f"connection closed early ({received} of {expected} bytes received)")


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------


def _normalise_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadError(f"dataset URL must be an http(s) URL, got {url!r}")
    if parts.username is not None or parts.password is not None:
        # Do not echo the URL: it holds the credentials.
        raise DownloadError(
            f"the dataset URL must not contain credentials; set {ENV_USERNAME}/{ENV_PASSWORD} "
            f"or use ~/.netrc instead"
        )
    if parts.query or parts.fragment:
        raise DownloadError(f"dataset URL must be a plain folder URL without ?query or #fragment: {url}")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _scrubber(credentials: tuple[str, str]) -> Callable[[str], str]:
    """Defence in depth: mask the password and auth token should either reach a message."""
    username, password = credentials
    token = base64.b64encode(f"{username}:{password}".encode("utf-8")).decode("ascii")
    # Masking a one- or two-character password would garble every message for no gain.
    secrets = [secret for secret in (token, password) if len(secret) >= 3]

    def scrub(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    return scrub


def download_dataset(
    dest: str | Path,
    url: str = DEFAULT_URL,
    *,
    credentials: tuple[str, str] | None = None,
    log: Callable[[str], None] = print,
    timeout: float = 60.0,
    retries: int = 3,
) -> dict:
    """Download every file of the dataset at ``url`` into ``dest`` and verify it.

    ``credentials`` defaults to :func:`resolve_credentials`. ``retries`` is the number of
    attempts per request (at least 1); a transfer cut short is resumed on the next attempt.
    Returns ``{"files", "downloaded", "skipped", "bytes", "verified_by"}`` where ``bytes`` is
    the total size of the dataset files in ``dest`` and ``verified_by`` is ``"sha256"`` or
    ``"size"``. Raises :class:`DownloadError` with a one-line message on any failure.
    """
    base_url = _normalise_url(url)
    if not isinstance(retries, int) or retries < 1:
        raise DownloadError(f"retries must be a whole number of at least 1, got {retries!r}")
    if credentials is None:
        credentials = resolve_credentials(base_url)
    if (
        not isinstance(credentials, tuple)
        or len(credentials) != 2
        or not all(isinstance(item, str) and item for item in credentials)
    ):
        raise DownloadError("credentials must be a (username, password) pair of non-empty strings")

    scrub = _scrubber(credentials)

    def safe_log(line: str) -> None:
        log(scrub(line))

    session = _Session(credentials, timeout=timeout, retries=retries, log=safe_log)
    try:
        return _Downloader(Path(dest), base_url, session, safe_log).run()
    except DownloadError as exc:
        message = scrub(str(exc))
        if message != str(exc):
            raise DownloadError(message) from None
        raise


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (1 on a DownloadError)."""
    parser = argparse.ArgumentParser(
        prog="python -m ichseq.physionet",
        description=(
            "Download the PhysioNet CT-ICH dataset. Credentials are read from "
            f"{ENV_USERNAME}/{ENV_PASSWORD} or from ~/.netrc."
        ),
    )
    parser.add_argument("dest", help="destination folder")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"dataset URL (default {DEFAULT_URL})")
    parser.add_argument("--retries", type=int, default=3, help="attempts per request (default 3)")
    parser.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds")
    args = parser.parse_args(argv)
    try:
        summary = download_dataset(args.dest, args.url, timeout=args.timeout, retries=args.retries)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
