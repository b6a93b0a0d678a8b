"""Download the restricted-access PhysioNet dataset CT-ICH v1.3.1.

HTTP (connections, redirects, Basic auth, retries with backoff, timeouts) is ``requests`` with urllib3's ``Retry``;
this module adds what is specific to the dataset:

- Credentials come from ``PHYSIONET_USERNAME``/``PHYSIONET_PASSWORD`` or a netrc entry for the dataset host, never
  from the workflow configuration (configs are committed and shared). They are sent preemptively, and only to the
  scheme, host and port of the dataset URL; no log line, error or written file contains the password.
- ``SHA256SUMS.txt`` at the dataset URL lists the files and their checksums. Where a server has none (404), the HTML
  directory listings below the URL are crawled and each file is checked against the size the server reports.
  Every path must be relative and free of ``..`` before it touches the disk.
- A file is streamed into ``<relpath>.part`` and renamed only once verified, so a final name always means a verified
  file. A cut or stalled transfer resumes from the ``.part`` with a ``Range`` request, in this run or the next; a
  file that fails verification is downloaded once more from scratch, then the run fails.
- ``<dest>/.ichseq-download-complete`` is removed when a run starts and written last, so a pipeline rule depending
  on it never sees a failed or partial download as done.
- A 401/403 explains the data-use agreement; every failure is one :class:`DownloadError` line naming the file.

Command line: ``python -m ichseq.data.download DEST [--url URL] [--retries N] [--timeout S]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import netrc
import os
import re
import sys
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterator, Mapping, TypeVar

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

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

#: Backoff base in seconds: retries wait up to 1, 2, 4... times it, capped (tests set it to 0).
RETRY_DELAY_S = 1.0
_MAX_RETRY_DELAY_S = 30
# Worth another try: timeouts, rate limits and server errors; never 401/403 (access) or 404.
_RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})
_CHUNK_BYTES = 1 << 20
# Listings and SHA256SUMS.txt are small; the cap protects memory from a misconfigured server.
_MAX_DOCUMENT_BYTES = 32 << 20

_T = TypeVar("_T")
_SHA_LINE = re.compile(r"([0-9a-fA-F]{64})[ \t]+\*?(\S.*)")
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)
_WINDOWS_DRIVE = re.compile(r"[A-Za-z]:")


# -- credentials --------------------------------------------------------------------------------------------------


def resolve_credentials(
    url: str, env: Mapping[str, str] | None = None, netrc_path: str | None = None
) -> tuple[str, str]:
    """Return ``(username, password)`` for the host of ``url``.

    Looks at ``PHYSIONET_USERNAME`` and ``PHYSIONET_PASSWORD`` in ``env`` (default :data:`os.environ`; both or
    neither must be set), then at the netrc file given by ``netrc_path``, else ``$NETRC``, else ``~/.netrc``.
    Raises :class:`DownloadError` when neither source has credentials for the host.
    """
    env = os.environ if env is None else env
    username, password = env.get(ENV_USERNAME) or "", env.get(ENV_PASSWORD) or ""
    if username and password:
        return username, password
    if username or password:
        present, missing = (ENV_USERNAME, ENV_PASSWORD) if username else (ENV_PASSWORD, ENV_USERNAME)
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
        f"no PhysioNet credentials for {host or url}: set {ENV_USERNAME} and {ENV_PASSWORD} in the environment, "
        f"or add the line 'machine {host or 'physionet.org'} login USERNAME password PASSWORD' to ~/.netrc "
        f"(chmod 600; looked in {path})"
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
        raise DownloadError(f"the netrc entry for {host} in {path} needs both 'login' and 'password'")
    return login, password


# -- HTTP ---------------------------------------------------------------------------------------------------------


class _Cut(Exception):
    """A response body stopped early (connection closed, or no data within the timeout)."""


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(parts.scheme)


class _Session(requests.Session):
    """Preemptive Basic auth for the dataset's origin only, urllib3 retries, identity encoding."""

    def __init__(self, base_url: str, credentials: tuple[str, str], retries: int):
        super().__init__()
        self.origin = _origin(base_url)
        self.auth = tuple(item.encode("utf-8") for item in credentials)  # requests would encode str as Latin-1
        self.headers["User-Agent"] = f"ichseq/{__version__} {self.headers['User-Agent']}"
        # Identity encoding, so Content-Length and Range offsets count bytes of the file.
        self.headers["Accept-Encoding"] = "identity"
        retry = Retry(
            total=retries - 1,
            status_forcelist=_RETRY_STATUSES,
            backoff_factor=RETRY_DELAY_S,
            backoff_max=_MAX_RETRY_DELAY_S,
            retry_after_max=_MAX_RETRY_DELAY_S,
            raise_on_status=False,  # the last answer comes back and gets its own message
        )
        for prefix in ("http://", "https://"):
            self.mount(prefix, HTTPAdapter(max_retries=retry))

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        """On a redirect, keep Authorization only on the dataset's scheme, host and port.

        requests' own version drops it on a change of host but then adds the netrc entry of the new host, which
        can be netrc's ``default`` entry, that is, this very login.
        """
        if _origin(prepared_request.url or "") != self.origin:
            prepared_request.headers.pop("Authorization", None)


def _describe(exc: BaseException) -> str:
    """One line for a network failure: its innermost cause, never request headers."""
    chain = [exc]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 20:
        chain.append(cause)
    for cause in chain:
        if isinstance(cause, urllib3.exceptions.IncompleteRead):
            return f"connection closed early ({cause.partial} bytes received, {cause.expected} more expected)"
    inner = chain[-1]
    if isinstance(inner, OSError) and inner.strerror:  # "Connection refused", "Name or service not known"...
        return inner.strerror
    # Tested after strerror: urllib3's NewConnectionError (refused, unknown host) is a TimeoutError subclass.
    if isinstance(inner, (TimeoutError, requests.Timeout, urllib3.exceptions.TimeoutError)):
        return "timed out waiting for the server"
    return f"{type(inner).__name__}: {inner}" if str(inner) else type(inner).__name__


def _body(response: requests.Response) -> Iterator[bytes]:
    """The body chunk by chunk; a cut raises :class:`_Cut` after the bytes that did arrive."""
    with response:
        while True:
            try:
                # read1, not read: read waits to fill a chunk and drops it if the connection fails meanwhile.
                chunk = response.raw.read1(_CHUNK_BYTES)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise _Cut(_describe(exc)) from None
            if not chunk:
                return
            yield chunk


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("Content-Length", "")
    return int(value) if value.isdigit() else None


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total size)`` from a Content-Range header; None where unknown."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not match:
        return None, None
    first, _last, total = match.groups()
    return (int(first) if first is not None else None), (int(total) if total != "*" else None)


# -- file list ----------------------------------------------------------------------------------------------------


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
            f"{where}: refusing path {raw!r} with a '..' component (it would escape the destination folder)"
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
                f"{CHECKSUM_FILE} line {lineno} is malformed: expected '<64 hex digits>  <relative path>'"
            )
        digest = match.group(1).lower()
        relpath = _safe_relpath(match.group(2), f"{CHECKSUM_FILE} line {lineno}")
        if relpath == CHECKSUM_FILE:
            continue  # a list that covers itself cannot hold its own checksum
        if digests.setdefault(relpath, digest) != digest:
            raise DownloadError(f"{CHECKSUM_FILE} lists {relpath} twice with different checksums")
    if not digests:
        raise DownloadError(f"{CHECKSUM_FILE} at {base_url} lists no files")
    return [_Entry(rel, base_url + urllib.parse.quote(rel), sha256=digest) for rel, digest in sorted(digests.items())]


class _LinkParser(HTMLParser):
    """Collects the ``href`` of every ``<a>`` tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(value.strip() for name, value in attrs if name == "href" and value)


def _crawl_listing(get_document: Callable[[str, str], str | None], base_url: str) -> list[_Entry]:
    """Files below ``base_url`` found by following its HTML directory listings.

    Only links that resolve strictly below ``base_url`` on the same scheme and host are used: that discards parent
    links (``../``), site navigation (``/about/``), other hosts and column-sorting links (``?C=N;O=D``) without
    having to recognise each kind.
    """
    base = urllib.parse.urlsplit(base_url)
    queue, seen, files = deque([base_url]), {base_url}, {}
    while queue:
        dir_url = queue.popleft()
        label = urllib.parse.unquote(dir_url[len(base_url):]) or "./"
        parser = _LinkParser()
        parser.feed(get_document(dir_url, f"directory listing {label}") or "")
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
            relpath = _safe_relpath(urllib.parse.unquote(target.path[len(base.path):]), f"directory listing {label}")
            files.setdefault(relpath, clean_url)
    if not files:
        raise DownloadError(
            f"no {CHECKSUM_FILE} and no files in the directory listing at {base_url}; is the URL right?"
        )
    return [_Entry(relpath, url) for relpath, url in sorted(files.items())]


# -- download -----------------------------------------------------------------------------------------------------


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
            break
        value /= 1024
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"


class _Downloader:
    def __init__(self, dest: Path, base_url: str, session: _Session, retries: int, timeout: float, log):
        self.dest, self.base_url, self.session = dest, base_url, session
        self.retries, self.timeout, self.log = retries, timeout, log

    def _request(self, url: str, what: str, *, method: str = "GET", offset: int = 0,
                 allow: tuple[int, ...] = ()) -> requests.Response:
        """A streamed answer with a 2xx status or one in ``allow``; anything else raises a DownloadError."""
        headers = {"Range": f"bytes={offset}-"} if offset else None
        try:
            response = self.session.request(method, url, headers=headers, stream=True, timeout=self.timeout)
        except requests.RequestException as exc:  # urllib3 has retried it already
            raise self._gave_up(what, url, _describe(exc)) from None
        code = response.status_code
        if 200 <= code < 300 or code in allow:
            return response
        response.close()
        status = f"HTTP {code} {response.reason or ''}".strip()
        if code in (401, 403):
            raise DownloadError(
                f"access denied for {what} ({status}): the PhysioNet account must have credentialed access and "
                f"must have signed the data-use agreement for the CT-ICH dataset at {DUA_URL}; the username and "
                f"password are read from {ENV_USERNAME}/{ENV_PASSWORD} or from ~/.netrc, check that they are right"
            )
        if code in _RETRY_STATUSES:
            raise self._gave_up(what, url, status)
        raise DownloadError(f"cannot download {what}: the server answered {status} for {url}")

    def _gave_up(self, what: str, url: str, reason: str) -> DownloadError:
        return DownloadError(f"could not download {what} from {url} after {self.retries} attempt(s): {reason}")

    def _attempts(self, what: str, url: str, attempt_once: Callable[[], _T]) -> _T:
        """Run ``attempt_once`` up to ``retries`` times while its transfer is cut short."""
        for attempt in range(1, self.retries + 1):
            try:
                return attempt_once()
            except _Cut as cut:
                reason = str(cut)
            if attempt < self.retries:
                delay = min(RETRY_DELAY_S * 2 ** (attempt - 1), _MAX_RETRY_DELAY_S)
                self.log(f"{what}: {reason}; retrying in {delay:.0f} s (attempt {attempt + 1} of {self.retries})")
                time.sleep(delay)
        raise self._gave_up(what, url, reason)

    def _document(self, url: str, what: str, *, missing_ok: bool = False) -> str | None:
        """GET a small text document; None on 404 when ``missing_ok``."""

        def attempt_once() -> str | None:
            response = self._request(url, what, allow=(404,) if missing_ok else ())
            if response.status_code == 404:
                response.close()
                return None
            body = bytearray()
            for chunk in _body(response):
                body += chunk
                if len(body) > _MAX_DOCUMENT_BYTES:
                    raise DownloadError(f"{what} at {url} is larger than expected; is --url right?")
            declared = "charset=" in response.headers.get("Content-Type", "").lower()
            charset = requests.utils.get_encoding_from_headers(response.headers) if declared else None
            return body.decode(charset or "utf-8", errors="replace")

        return self._attempts(what, url, attempt_once)

    def run(self) -> dict:
        self.dest.mkdir(parents=True, exist_ok=True)
        marker = self.dest / MARKER_FILE
        marker.unlink(missing_ok=True)  # a marker from an earlier run must not vouch for this one if it fails
        checksums = self._document(self.base_url + CHECKSUM_FILE, CHECKSUM_FILE, missing_ok=True)
        if checksums is not None:
            entries, verified_by = _parse_checksums(checksums, self.base_url), "sha256"
            # Keep the list next to the data so it can be re-checked offline (sha256sum -c).
            write_bytes_atomic(self.dest / CHECKSUM_FILE, checksums.encode("utf-8"))
        else:
            self.log(f"no {CHECKSUM_FILE} at {self.base_url}; verifying files by size instead")
            entries, verified_by = _crawl_listing(self._document, self.base_url), "size"
        self.log(f"{len(entries)} files at {self.base_url} (verified by {verified_by})")

        downloaded = skipped = 0
        for index, entry in enumerate(entries, start=1):
            prefix, final = f"[{index}/{len(entries)}] {entry.relpath}", self.dest / entry.relpath
            if verified_by == "size":
                # 405/501: the server has no HEAD; the size then comes from the GET's Content-Length.
                with self._request(entry.url, entry.relpath, method="HEAD", allow=(405, 501)) as response:
                    entry.size = _content_length(response.headers) if response.ok else None
            if final.is_file() and self._is_verified(entry, final):
                skipped += 1
                self.log(f"{prefix}: already present and verified ({_human(final.stat().st_size)}), skipping")
                continue
            self.log(f"{prefix}: downloading" + (f" ({_human(entry.size)})" if entry.size is not None else ""))
            self._download(entry, final)
            downloaded += 1
            self.log(f"{prefix}: done, {_human(final.stat().st_size)} verified by {verified_by}")

        total = sum((self.dest / entry.relpath).stat().st_size for entry in entries)
        summary = {"files": len(entries), "downloaded": downloaded, "skipped": skipped, "bytes": total,
                   "verified_by": verified_by}
        record = {"url": self.base_url, "files": len(entries), "verified_by": verified_by, "bytes": total,
                  "completed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_bytes_atomic(marker, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
        self.log(f"complete: {len(entries)} files ({downloaded} downloaded, {skipped} already present), "
                 f"{_human(total)} in {self.dest}")
        return summary

    def _is_verified(self, entry: _Entry, path: Path) -> bool:
        if entry.sha256 is not None:
            return _sha256_file(path) == entry.sha256
        # In size mode a file of unknown expected size cannot be vouched for: fetch it again.
        return entry.size is not None and path.stat().st_size == entry.size

    def _download(self, entry: _Entry, final: Path) -> None:
        """Fetch ``entry`` into its ``.part``, verify it, and rename it into place."""
        part = final.with_name(final.name + PART_SUFFIX)
        part.parent.mkdir(parents=True, exist_ok=True)
        # A verification failure earns exactly one fresh download before giving up.
        for round_ in (1, 2):
            try:
                total = self._attempts(entry.relpath, entry.url, lambda: self._fetch_into(entry, part))
            except DownloadError as exc:
                if not part.exists():
                    raise
                kept = f"{entry.relpath}{PART_SUFFIX} is kept and the next run resumes from it"
                raise DownloadError(f"{exc}; {kept}") from None
            problem = self._verification_problem(entry, part, total)
            if problem is None:
                os.replace(part, final)
                return
            part.unlink(missing_ok=True)  # a bad .part must never be resumed or renamed
            if round_ == 2:
                raise DownloadError(
                    f"{problem} (after downloading it twice from scratch; the server copy or {CHECKSUM_FILE} is "
                    f"corrupt, or a proxy alters it; the bad file was deleted)"
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
                f"cannot verify {entry.relpath}: the server reports no size (Content-Length) for it and has no "
                f"{CHECKSUM_FILE}"
            )
        got = part.stat().st_size
        if got == expected:
            return None
        return f"size mismatch for {entry.relpath}: expected {expected} bytes (server Content-Length), got {got}"

    def _fetch_into(self, entry: _Entry, part: Path) -> int | None:
        """One attempt: fill ``part`` up to the end of the file, resuming it if it exists.

        Returns the total size the server announced (None if it did not say); raises :class:`_Cut`, keeping
        ``part``, when the transfer stops early.
        """
        # At most one restart from zero per attempt, for a server that rejects our offset.
        for _ in range(2):
            offset = part.stat().st_size if part.exists() else 0
            response = self._request(entry.url, entry.relpath, offset=offset, allow=(416,) if offset else ())
            first, total = _parse_content_range(response.headers.get("Content-Range"))
            if response.status_code == 416:
                response.close()
                if total == offset:
                    return total  # the .part is already complete; verification decides
                self._discard(part, f"{entry.relpath}: server cannot resume at byte {offset}")
                continue
            if response.status_code == 206 and first != offset:
                response.close()
                self._discard(part, f"{entry.relpath}: server sent an unexpected range")
                continue
            if response.status_code == 206 and offset:
                self.log(f"{entry.relpath}: resuming at byte {offset}")
            elif response.status_code == 200:
                if offset:
                    self.log(f"{entry.relpath}: server ignored the resume request; restarting from zero")
                offset, total = 0, _content_length(response.headers)
            elif response.status_code != 206:
                response.close()
                raise _Cut(f"unexpected HTTP {response.status_code} {response.reason}")
            with open(part, "ab" if offset else "wb") as handle:
                for chunk in _body(response):
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            return total
        raise _Cut("server did not accept resuming or restarting the download")

    def _discard(self, part: Path, why: str) -> None:
        self.log(f"{why}; restarting from zero")
        part.unlink(missing_ok=True)


# -- entry points -------------------------------------------------------------------------------------------------


def _normalise_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadError(f"dataset URL must be an http(s) URL, got {url!r}")
    if parts.username is not None or parts.password is not None:
        # Do not echo the URL: it holds the credentials.
        raise DownloadError(
            f"the dataset URL must not contain credentials; set {ENV_USERNAME}/{ENV_PASSWORD} or use ~/.netrc instead"
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

    ``credentials`` defaults to :func:`resolve_credentials`. ``retries`` is the number of attempts per request and
    per transfer (at least 1); a transfer cut short is resumed on the next attempt. ``timeout`` (seconds) bounds
    connecting and each wait for data, so a server that stops answering fails the attempt instead of hanging.
    Returns ``{"files", "downloaded", "skipped", "bytes", "verified_by"}`` where ``bytes`` is the total size of
    the dataset files in ``dest`` and ``verified_by`` is ``"sha256"`` or ``"size"``. Raises
    :class:`DownloadError` with a one-line message on any failure.
    """
    base_url = _normalise_url(url)
    if not isinstance(retries, int) or retries < 1:
        raise DownloadError(f"retries must be a whole number of at least 1, got {retries!r}")
    if credentials is None:
        credentials = resolve_credentials(base_url)
    if not (isinstance(credentials, tuple) and len(credentials) == 2
            and all(isinstance(item, str) and item for item in credentials)):
        raise DownloadError("credentials must be a (username, password) pair of non-empty strings")
    scrub = _scrubber(credentials)
    try:
        with _Session(base_url, credentials, retries) as session:
            return _Downloader(Path(dest), base_url, session, retries, timeout, lambda line: log(scrub(line))).run()
    except DownloadError as exc:
        message = scrub(str(exc))
        if message != str(exc):
            raise DownloadError(message) from None
        raise
    except OSError as exc:  # local files (requests' errors are OSErrors too, but never get this far)
        raise DownloadError(f"cannot write {exc.filename or dest}: {exc.strerror or exc}") from None


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (1 on a DownloadError)."""
    parser = argparse.ArgumentParser(
        prog="python -m ichseq.data.download",
        description=f"Download the PhysioNet CT-ICH dataset. Credentials are read from {ENV_USERNAME}/"
        f"{ENV_PASSWORD} or from ~/.netrc.",
    )
    parser.add_argument("dest", help="destination folder")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"dataset URL (default {DEFAULT_URL})")
    parser.add_argument("--retries", type=int, default=3, help="attempts per request (default 3)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait to connect or for data")
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
