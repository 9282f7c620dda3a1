"""A file system that forgets as a power cut would, for the power-cut suite.

A FUSE pass-through over a backing directory that keeps every write to a file in memory
(like a page cache) until that file is fsync'd or fdatasync'd; only then does it reach the
backing file, and the backing file is fsync'd in turn. Killing the daemon is the power
cut: whatever was written but never synced is gone, and the backing directory holds what
a disk with honest flushes would hold after losing power — so the suite tests exactly the
decisions SQLite and the agent make about when to sync.

Metadata (create, rename, unlink, mkdir) reaches the backing directory at once, as a
journalling file system commits it within seconds: this models lost data, not a lost
directory entry.

Run as its own process: `python powercut_fs.py BACKING MOUNTPOINT` (root, /dev/fuse).
`PowerCutFs` starts it, waits for the mount, cuts the power and unmounts.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PAGE = 4096


class PowerCutFs:
    """The daemon as a test sees it: mounted at `mountpoint` over `backing`."""

    def __init__(self, backing: Path, mountpoint: Path) -> None:
        self.backing, self.mountpoint = backing, mountpoint
        self._process: subprocess.Popen[bytes] | None = None

    def mount(self) -> PowerCutFs:
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        log = (self.backing.parent / "powercut-fs.log").open("ab")
        with log:
            command = [sys.executable, __file__, str(self.backing), str(self.mountpoint)]
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self.mounted():
            assert self._process.poll() is None, "the power-cut file system did not start (see powercut-fs.log)"
            assert time.monotonic() < deadline, "the power-cut file system did not mount"
            time.sleep(0.02)
        return self

    def cut(self, *writers: subprocess.Popen[bytes]) -> None:
        """Power off: the daemon dies with everything unsynced, then the `writers` (the
        processes using the mount, which would die with the power), then the mount goes."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
        for writer in writers:
            writer.kill()
            writer.wait(timeout=10)
        if self.mounted():
            subprocess.run(["umount", str(self.mountpoint)], check=True)

    def mounted(self) -> bool:
        """From the mount table: a mount whose daemon died fails every stat, os.path.ismount's too."""
        where = os.path.realpath(self.mountpoint).replace(" ", "\\040")
        return any(line.split()[1] == where for line in Path("/proc/self/mounts").read_text().splitlines())


def _serve(backing: str, mountpoint: str) -> None:
    from fuse import FUSE, FuseOSError, Operations  # the daemon's process alone needs fusepy

    class Forgetful(Operations):  # type: ignore[misc]
        """Pass-through whose file data is only durable once fsync'd."""

        def __init__(self) -> None:
            self.dirty: dict[str, Dirty] = {}

        def _real(self, path: str) -> str:
            return os.path.join(backing, path.lstrip("/"))

        def __call__(self, op: str, *args: Any) -> Any:
            try:
                return super().__call__(op, *args)
            except OSError as exc:  # as the kernel would report it
                raise FuseOSError(exc.errno or errno.EIO) from None

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            st = os.lstat(self._real(path))
            attrs = {k: getattr(st, k) for k in ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink")}
            attrs |= {"st_uid": st.st_uid, "st_size": st.st_size}
            if path in self.dirty:
                attrs["st_size"] = self.dirty[path].size
            return attrs

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(self._real(path))]

        def open(self, path: str, flags: int) -> int:
            return os.open(self._real(path), os.O_RDWR if flags & os.O_ACCMODE else os.O_RDONLY)

        def create(self, path: str, mode: int, fi: Any = None) -> int:
            return os.open(self._real(path), os.O_RDWR | os.O_CREAT, mode)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            if path not in self.dirty:
                return os.pread(fh, size, offset)
            return self.dirty[path].read(size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            self._dirty(path).write(data, offset)
            return len(data)

        def truncate(self, path: str, length: int, fh: int | None = None) -> None:
            self._dirty(path).truncate(length)

        def fsync(self, path: str, datasync: int, fh: int) -> None:
            if path in self.dirty:
                self.dirty.pop(path).flush()

        def flush(self, path: str, fh: int) -> None:
            """close() syncs nothing."""

        def release(self, path: str, fh: int) -> None:
            os.close(fh)

        def unlink(self, path: str) -> None:
            if path in self.dirty:
                self.dirty.pop(path).close()
            os.unlink(self._real(path))

        def rename(self, old: str, new: str) -> None:
            os.rename(self._real(old), self._real(new))
            if old in self.dirty:
                self.dirty[new] = self.dirty.pop(old)

        def mkdir(self, path: str, mode: int) -> None:
            os.mkdir(self._real(path), mode)

        def rmdir(self, path: str) -> None:
            os.rmdir(self._real(path))

        def chmod(self, path: str, mode: int) -> None:
            os.chmod(self._real(path), mode)

        def chown(self, path: str, uid: int, gid: int) -> None:
            os.chown(self._real(path), uid, gid)

        def utimens(self, path: str, times: tuple[float, float] | None = None) -> None:
            os.utime(self._real(path), times)

        def _dirty(self, path: str) -> Dirty:
            if path not in self.dirty:
                self.dirty[path] = Dirty(self._real(path))
            return self.dirty[path]

    # attribute caching off: the kernel must ask for sizes that only the daemon knows
    FUSE(Forgetful(), mountpoint, foreground=True, nothreads=True, attr_timeout=0, entry_timeout=0)


class Dirty:
    """A file's unsynced state: the pages written since its last fsync, and its size."""

    def __init__(self, real: str) -> None:
        self._fd = os.open(real, os.O_RDWR)  # its own: the writer's handle may be closed first
        self.pages: dict[int, bytearray] = {}
        self.size = self._backing_size = os.fstat(self._fd).st_size

    def _page(self, index: int) -> bytearray:
        if index not in self.pages:
            start = index * PAGE
            # bytes past a truncation read as zeros, even where the backing file still has them
            stored = os.pread(self._fd, max(0, min(PAGE, self._backing_size - start)), start)
            self.pages[index] = bytearray(stored.ljust(PAGE, b"\0"))
        return self.pages[index]

    def read(self, size: int, offset: int) -> bytes:
        end = min(offset + size, self.size)
        out = bytearray()
        while offset < end:
            index, within = divmod(offset, PAGE)
            take = min(PAGE - within, end - offset)
            out += self._page(index)[within : within + take]
            offset += take
        return bytes(out)

    def write(self, data: bytes, offset: int) -> None:
        done = 0
        while done < len(data):
            index, within = divmod(offset + done, PAGE)
            take = min(PAGE - within, len(data) - done)
            self._page(index)[within : within + take] = data[done : done + take]
            done += take
        self.size = max(self.size, offset + len(data))

    def truncate(self, length: int) -> None:
        for index in [i for i in self.pages if i * PAGE >= length]:
            del self.pages[index]
        if length % PAGE and length // PAGE in self.pages:
            page = self.pages[length // PAGE]
            page[length % PAGE :] = bytes(PAGE - length % PAGE)
        self._backing_size = min(self._backing_size, length)
        self.size = length

    def flush(self) -> None:
        """fsync: the pages reach the backing file, and the backing file its disk."""
        try:
            for index, page in sorted(self.pages.items()):
                start = index * PAGE
                if start < self.size:
                    os.pwrite(self._fd, bytes(page[: min(PAGE, self.size - start)]), start)
            os.ftruncate(self._fd, self.size)
            os.fsync(self._fd)
        finally:
            self.close()

    def close(self) -> None:
        os.close(self._fd)


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2])
