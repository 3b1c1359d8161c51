"""Downloading dataset archives safely, and the errors every loader raises.

:func:`download_url` streams a file into a temporary file in the target
folder (with a tqdm progress bar), checks its MD5 and only then renames it to
its final name with ``os.replace``.  An exception of any kind (no network, a
connection dropped halfway, a wrong checksum, Ctrl-C) removes the temporary
file, so a half-downloaded archive is never left where a loader would find it.

Errors are :class:`DatasetError` subclasses of :class:`RuntimeError` whose
message says what happened and what to do; the example scripts print the
message instead of a traceback.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["DatasetError", "DatasetNotFoundError", "DownloadError", "CorruptDatasetError",
           "default_cache_dir", "download_url", "md5sum"]

#: the function that opens a URL; tests replace it to simulate failures offline
urlopen = urllib.request.urlopen


class DatasetError(RuntimeError):
    """Base class of minigrad's dataset errors (a RuntimeError)."""


class DatasetNotFoundError(DatasetError):
    """The files of a dataset are not where they were looked for."""


class DownloadError(DatasetError):
    """A download failed (offline, interrupted, or a wrong checksum)."""


class CorruptDatasetError(DatasetError):
    """A dataset file exists but cannot be read (truncated, wrong format)."""


def default_cache_dir() -> Path:
    """``$MINIGRAD_DATA`` if set, else ``~/.cache/minigrad``."""
    env = os.environ.get("MINIGRAD_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "minigrad"


def md5sum(path, chunk_size: int = 1 << 20) -> str:
    """Hex MD5 digest of a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def download_url(url: str, path, md5: str | None = None, *, progress: bool = True,
                 timeout: float = 60.0, chunk_size: int = 1 << 16) -> Path:
    """Download ``url`` to ``path`` (atomically) and check its MD5.

    If ``path`` already exists with the right MD5 nothing is downloaded.
    Raises :class:`DownloadError` (network failure, wrong MD5); on any
    exception, KeyboardInterrupt included, no partial file is left behind.
    """
    path = Path(path)
    if path.exists() and (md5 is None or md5sum(path) == md5):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    h = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urlopen(url, timeout=timeout)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise DownloadError(
                    f"could not download {url} ({exc}). Are you offline? Download the file "
                    f"by hand and place it at {path}, or point the program at a folder that "
                    "already holds the data (e.g. --data-dir).") from exc
            with response:
                total = response.headers.get("Content-Length") if hasattr(response, "headers") \
                    else None
                total = int(total) if total and str(total).isdigit() else None
                bar = None
                if progress:
                    from tqdm import tqdm
                    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                               desc=f"downloading {path.name}", leave=False)
                try:
                    while True:
                        try:
                            chunk = response.read(chunk_size)
                        except (urllib.error.URLError, OSError) as exc:
                            raise DownloadError(
                                f"the download of {url} broke off after "
                                f"{out.tell():,} bytes ({exc}); nothing was kept. Try again, "
                                f"or download the file by hand and place it at {path}.") from exc
                        if not chunk:
                            break
                        out.write(chunk)
                        h.update(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                finally:
                    if bar is not None:
                        bar.close()
            out.flush()
            os.fsync(out.fileno())
        if md5 is not None and h.hexdigest() != md5:
            raise DownloadError(
                f"the file downloaded from {url} is corrupt: MD5 {h.hexdigest()} instead of "
                f"{md5}; it was deleted. Try again, or download it by hand and place it at "
                f"{path}.")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)           # mkstemp makes it private (0600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
