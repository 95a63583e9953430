"""Reading one tar shard where it lives: a local file, a `pipe:` command (`pipe:aws s3 cp s3://b/x.tar -`) or an
http(s) URL, with bounded retries for the remote ones.

A remote read that breaks off (the server went away, a reset connection, a timeout, a failed pipe command) is counted
as a retry and read again after a pause that doubles each time; the samples already delivered are passed over on the
re-read, so a transient failure neither loses nor repeats a sample. When every attempt fails the shard is skipped and
counted, as a truncated local tar is. HTTP is read with the standard library, whose socket timeout bounds every wait
(webdataset would call curl, whose 30 retries can stall a reader for minutes).
"""

from __future__ import annotations

import functools
import http.client
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

from webdataset import gopen
from webdataset.tariterators import base_plus_ext

RawSample = dict[str, Any]  # {"__key__", "__url__", "<ext>": bytes, ...}
HTTP_SCHEMES = ("http://", "https://")


class Tally(Protocol):
    """What the reader reports to: skipped shards by reason, and retries (`pipeline.DataTally`)."""

    def skip(self, reason: str, detail: str) -> None: ...

    def retry(self, detail: str) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a remote shard is tried before it is skipped.

    Attributes:
        attempts: reads of a remote shard in all (local files are read once: a re-read would fail the same way).
        wait_s: pause before the first re-read; it doubles before each further one.
        timeout_s: HTTP connect timeout and longest wait for any one read from the socket.
    """

    attempts: int = 3
    wait_s: float = 1.0
    timeout_s: float = 30.0


def is_remote(url: str) -> bool:
    """A shard read through a command or over a network, where a failed read may succeed when tried again."""
    return url.startswith("pipe:") or ("://" in url and not url.startswith("file://"))


class _WholeBody:
    """An HTTP response body that raises `IncompleteRead` when it ends before its Content-Length (http.client's
    `read(n)` returns b"" there, and a tar cut at a member boundary would end as if complete)."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.response = response

    def read(self, size: int = -1) -> bytes:
        data = self.response.read(None if size < 0 else size)
        if not data and size != 0 and self.response.length:
            raise http.client.IncompleteRead(b"", self.response.length)
        return data

    def __enter__(self) -> _WholeBody:
        return self

    def __exit__(self, *exc: object) -> None:
        self.response.close()


def open_stream(url: str, timeout_s: float) -> IO[bytes] | _WholeBody:
    """A binary stream of the shard: http(s) through urllib (timeouts bound every wait), the rest through webdataset."""
    if url.startswith(HTTP_SCHEMES):
        return _WholeBody(urllib.request.urlopen(url, timeout=timeout_s))  # noqa: S310 - the user's own shard URL
    return gopen(url, "rb")


def fetch_text(url: str, timeout_s: float = RetryPolicy.timeout_s) -> str:
    """The body of a small remote file (an index.json) as text."""
    with open_stream(url, timeout_s) as stream:
        return stream.read().decode()


def _permanent(err: BaseException) -> bool:
    """An answer that a retry cannot change: the server says the shard is missing or forbidden."""
    return isinstance(err, urllib.error.HTTPError) and 400 <= err.code < 500


COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz: read through tarfile
BLOCK = 512


def _read_exact(stream: Any, size: int) -> bytes:
    """`size` bytes, fewer only at the end of the stream (a socket or pipe may return less per read)."""
    data = stream.read(size)
    while 0 < len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            break
        data += more
    return data


def _octal(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # GNU base-256 for large numbers
        return int.from_bytes(field[1:], "big", signed=field[:1] == b"\xff")
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


def _pax_path(records: bytes) -> str | None:
    """The `path` of a pax extended header ("<length> <key>=<value>\\n" records), if it sets one."""
    for line in records.split(b"\n"):
        _, _, field = line.partition(b" ")
        key, _, value = field.partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "surrogateescape")
    return None


def _payload(stream: Any, size: int) -> bytes:
    """A member's `size` bytes, in one read, and the padding after them."""
    data, padding = _read_exact(stream, size), -size % BLOCK
    if len(data) < size or len(_read_exact(stream, padding)) < padding:
        raise tarfile.ReadError("unexpected end of data")
    return data


Members = Iterator[tuple[str, Callable[[], bytes]]]


class _Once:
    """`read()` that reads on its first call and returns the same bytes after."""

    def __init__(self, read: Callable[[], bytes]) -> None:
        self.read, self.data = read, None

    def __call__(self) -> bytes:
        if self.data is None:
            self.data = self.read()
        return self.data


def tar_members(stream: Any) -> Members:
    """(name, read) of the regular files of an uncompressed tar stream, in order (ustar, GNU long names, pax paths);
    `read()` gives the bytes, in one read (tarfile's stream mode reads 10 KiB records), and is called, as tarfile's
    `extractfile`, after the header: a cut inside a member shows only once the member before it is complete.

    Raises:
        tarfile.ReadError: where tarfile's stream mode raises: an empty stream, a bad first header, a stream that
            ends inside a member or its padding (it ends quietly, as tarfile does, at a later cut or invalid header).
    """
    next_name: str | None = None
    offset, extended = 0, False  # extended: an extended header (GNU or pax) waits for its member's header
    while True:
        header = _read_exact(stream, BLOCK)
        if len(header) < BLOCK or header.count(0) == BLOCK:
            if offset == 0 or extended:
                raise tarfile.ReadError("empty file" if not header else "truncated or missing header")
            return  # as tarfile: a tar may end after any whole member, without its end-of-archive blocks
        if _octal(header[148:156]) != sum(header[:148]) + 256 + sum(header[156:]):
            if offset == 0 or extended:
                raise tarfile.ReadError("bad checksum")
            return  # as tarfile's stream mode, which ends at the first invalid header after the first
        size, kind = _octal(header[124:136]), header[156:157]
        offset += BLOCK + size + -size % BLOCK
        extended = kind in (b"L", b"K", b"x")
        if kind in (b"0", b"\0", b"7"):
            name = header[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            prefix = header[345:500].split(b"\0", 1)[0] if header[257:263] == b"ustar\0" else b""
            name = next_name or (f"{prefix.decode('utf-8', 'surrogateescape')}/{name}" if prefix else name)
            next_name, read = None, _Once(functools.partial(_payload, stream, size))
            yield name, read
            read()  # passes over a member the caller did not want (a second call reads nothing)
            continue
        data = _payload(stream, size)
        if kind == b"L":  # GNU long name of the next member
            next_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif kind == b"x":
            next_name = _pax_path(data) or next_name
        elif kind not in (b"g", b"K"):  # directories, links: nothing to read
            next_name = None


class _Prefixed:
    """A stream with bytes already read put back in front."""

    def __init__(self, head: bytes, stream: Any) -> None:
        self.head, self.stream = head, stream

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            return self.stream.read(size)
        if size < 0:
            data, self.head = self.head + self.stream.read(), b""
            return data
        data, self.head = self.head[:size], self.head[size:]
        return data if len(data) == size else data + self.stream.read(size - len(data))


def _stream_members(stream: Any) -> Members:
    """Regular members of a tar stream: uncompressed ones by `tar_members`, compressed ones through tarfile."""
    head = _read_exact(stream, BLOCK)
    if not head.startswith(COMPRESSED):
        yield from tar_members(_Prefixed(head, stream))
        return
    with tarfile.open(fileobj=_Prefixed(head, stream), mode="r|*") as tar:
        for member in tar:
            if member.isreg():
                yield member.name, functools.partial(lambda m: tar.extractfile(m).read(), member)


def _one_pass(url: str, timeout_s: float, failure: list[tuple[str, BaseException, str]]) -> Iterator[RawSample]:
    """The shard's complete samples in order; a failure is appended to `failure` (reason, error, lost key)."""
    current: RawSample | None = None
    try:
        with open_stream(url, timeout_s) as stream:
            for name, read in _stream_members(stream):
                key, ext = base_plus_ext(name)
                if key is None:
                    continue
                if current is not None and current["__key__"] != key:
                    yield current  # complete: a tar holds each key's members together
                    current = None
                current = current or {"__key__": key, "__url__": url}
                current[ext.lower()] = read()
    except (tarfile.TarError, EOFError) as err:
        failure.append(("truncated_tar", err, current["__key__"] if current else ""))
        return
    except (OSError, ValueError, http.client.HTTPException) as err:
        if isinstance(err.__context__, GeneratorExit):
            return  # the reader stopped early and closed the stream: its exit status says nothing about the data
        failure.append(("unreadable_shard", err, current["__key__"] if current else ""))
        return
    if current is not None:
        yield current


def read_shard(url: str, tally: Tally, policy: RetryPolicy = RetryPolicy()) -> Iterator[RawSample]:
    """Raw samples of one tar shard, grouped by key; a shard that cannot be read in full is counted and ends early.

    The sample being read when a shard breaks off is dropped with it (it may be missing members). A remote shard is
    re-read up to `policy.attempts` times first, continuing after the samples it already gave.
    """
    attempts = max(1, policy.attempts) if is_remote(url) else 1
    delivered = 0
    for attempt in range(1, attempts + 1):
        failure: list[tuple[str, BaseException, str]] = []
        for index, raw in enumerate(_one_pass(url, policy.timeout_s, failure)):
            if index >= delivered:  # a re-read passes over what an earlier attempt gave
                delivered += 1
                yield raw
        if not failure:
            return
        reason, err, lost = failure[0]
        where = f"shard {url} after {delivered} samples"
        if attempt < attempts and not _permanent(err):
            wait = policy.wait_s * 2 ** (attempt - 1)
            tally.retry(f"{where}: {err!r}; reading it again in {wait:g} s (attempt {attempt + 1} of {attempts})")
            time.sleep(wait)
            continue
        lost_text = f" (sample {lost} lost)" if lost else ""
        tried = f" after {attempt} attempts" if attempt > 1 else ""
        if reason == "truncated_tar":
            tally.skip(reason, f"{where} breaks off{tried}: {err}{lost_text}. Fix: rewrite or re-copy the shard.")
        else:
            tally.skip(reason, f"cannot read {where}{tried}: {err}. Fix: check the path, URL or pipe command.")
        return
