"""Discovery: glob the configured patterns, follow symlinks, identify files by (dev, inode)."""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
from dataclasses import dataclass

FileKey = tuple[int, int]
MISSING_TARGET = os.strerror(errno.ENOENT)  # the reason given for a link that leads to no file


@dataclass(frozen=True)
class Found:
    """One matched log file: the path that matched and the identity of its symlink target."""

    key: FileKey
    path: str
    size: int

    @property
    def src(self) -> str:
        """Basename of the matched path (the kubelet name under /var/log/containers)."""
        return os.path.basename(self.path)


def is_excluded(path: str, excludes: list[str], self_prefix: str | None) -> bool:
    """True when `path` matches an exclude glob or belongs to the forwarder's own pod."""
    if self_prefix and os.path.basename(path).startswith(self_prefix):
        return True
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in excludes)


def scan(
    patterns: list[str],
    excludes: list[str],
    self_prefix: str | None,
    unreadable: dict[str, str] | None = None,
) -> dict[FileKey, Found]:
    """Every regular file matched by `patterns`, keyed by the (st_dev, st_ino) of its target.

    Raises ScanError when a folder cannot be listed. Matched paths that lead to no file (a
    symlink whose target is gone or not mounted) or to something else than a regular file are
    put in `unreadable`, path -> reason, when it is given.
    """
    found: dict[FileKey, Found] = {}
    for pattern in patterns:
        probe(pattern)
        for path in sorted(glob.glob(pattern)):
            if is_excluded(path, excludes, self_prefix):
                continue
            try:
                st = os.stat(path)  # follows /var/log/containers -> /var/log/pods symlinks
            except FileNotFoundError:  # dangling symlink: target deleted, or not mounted here
                if unreadable is not None:
                    unreadable[path] = MISSING_TARGET
                continue
            except OSError as exc:
                if unreadable is not None:
                    unreadable[path] = exc.strerror or type(exc).__name__
                continue
            if not is_regular(st.st_mode):  # a FIFO, socket, device or directory
                if unreadable is not None:
                    unreadable[path] = "not a regular file"
                continue
            key = (st.st_dev, st.st_ino)
            found.setdefault(key, Found(key, path, st.st_size))
    return found


def dangling_links(unreadable: dict[str, str]) -> dict[str, str]:
    """Link target -> path of the matched links that lead to no file (`scan`'s `unreadable`).

    >>> dangling_links({"/c/a.log": MISSING_TARGET, "/c/fifo.log": "not a regular file"})
    {'/c/a.log': '/c/a.log'}
    """
    return {
        os.path.realpath(path): path
        for path, reason in unreadable.items()
        if reason == MISSING_TARGET
    }


class ScanError(OSError):
    """A folder of the globs cannot be listed (out of descriptors, permissions): the scan saw
    nothing, which must not be taken for every file being gone."""


def probe(pattern: str) -> None:
    """List the folder the pattern starts from, as glob would, but raise what glob swallows
    (ScanError); a folder that does not exist is fine (nothing matches)."""
    fixed = pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
    folder = os.path.dirname(fixed) or "."
    try:
        with os.scandir(folder):
            pass
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise ScanError(exc.errno, f"cannot list {folder}: {exc.strerror}") from None


def any_match(patterns: list[str]) -> bool:
    """True when any pattern matches any path (excluded ones included)."""
    return any(next(glob.iglob(pattern), None) is not None for pattern in patterns)


def is_regular(mode: int) -> bool:
    """True for a regular file's st_mode."""
    return (mode & 0o170000) == 0o100000
