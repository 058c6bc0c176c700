"""Who may write a cache folder: one prepare at a time, and decode workers that never outlive it.

The lock is `flock` on `<folder>/lock`; the kernel releases it when every process holding
the descriptor is gone. Two things kept it held after a `prepare` was killed, and both are
closed off here:

- forked decode workers inherited the descriptor: `worker_init` closes it in each worker;
- workers outlived their parent: `worker_init` asks Linux to kill them when it dies
  (PR_SET_PDEATHSIG); elsewhere a thread in each worker ends it once its parent is gone.

While held, the file says `pid@host` of the holder; a clean release empties it. A prepare that
finds the lock busy names the holder once and waits. If the holder is a process of this host
that no longer runs while the lock is still held (workers of a prepare from an older earmark,
or any process that inherited the descriptor), the lock is taken over with a message: the lock
file is replaced, so those left-overs hold a lock nobody asks for.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

LOCK_FILE = "lock"
TAKEOVER_FILE = "lock.takeover"  # held for the instant a dead holder's lock file is replaced
POLL_S = 0.2  # how often a waiting prepare retries the lock and checks that its holder lives
PARENT_CHECK_S = 0.5  # without PR_SET_PDEATHSIG: how often a worker checks that its parent lives
PR_SET_PDEATHSIG = 1  # linux/prctl.h




@contextmanager
def folder_lock(folder: Path, say: Callable[[str], None]) -> Iterator[Optional[int]]:
    """Hold the folder's lock; yields its descriptor (None where there is no flock: Windows).

    `say` gets one line when the prepare has to wait, and one when it takes over a lock whose
    holder is gone or finds that the previous holder was killed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock, concurrent prepares of one folder are unsafe there
        yield None
        return
    path = folder / LOCK_FILE
    announced = False
    while True:
        # O_CLOEXEC: a program the holder execs never inherits the lock
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(descriptor)
            if holder and not _holder_alive(holder) and _replace_dead_lock(folder, descriptor):
                say(f"cache lock {path} was still held although the prepare that took it ({holder}) no longer "
                    f"runs (left-over decode workers?); taking it over")
            elif not announced:
                say(f"waiting for another prepare of {folder} ({holder or 'holder unknown'}) to finish")
                announced = True
            os.close(descriptor)
            time.sleep(POLL_S)
            continue
        if _is_current(descriptor, path):
            break
        os.close(descriptor)  # the file was replaced while we waited: lock the one now in place
    previous = _read_holder(descriptor)
    if previous and previous != _holder_text():
        say(f"the previous prepare of {folder} ({previous}) was interrupted; what it finished is reused, "
            f"the rest is decoded now")
    _write_holder(descriptor, _holder_text())
    try:
        yield descriptor
    finally:
        _write_holder(descriptor, "")  # a clean release: the next holder finds no pid
        os.close(descriptor)


def worker_init(parent_pid: int, lock_descriptor: Optional[int]) -> None:
    """Initializer of every decode worker: drop the inherited lock, die with the parent."""
    if lock_descriptor is not None:
        try:
            os.close(lock_descriptor)  # a fork shares the lock; only the parent may hold it
        except OSError:
            pass
    if sys.platform == "linux":
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the kernel was asked to tell us
        os._exit(1)


def parent_alive(parent_pid: Optional[int]) -> bool:
    """In a worker: whether the prepare that started it still runs (None: not a worker)."""
    return parent_pid is None or os.getppid() == parent_pid


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_S)
    os._exit(1)


def _holder_text() -> str:
    return f"pid {os.getpid()}@{socket.gethostname()}"


def _read_holder(descriptor: int) -> str:
    try:
        return os.pread(descriptor, 256, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _write_holder(descriptor: int, text: str) -> None:
    try:
        os.ftruncate(descriptor, 0)
        if text:
            os.pwrite(descriptor, (text + "\n").encode(), 0)
    except OSError:  # a read-only or full disk: the lock still works, only the name is missing
        pass


def _holder_alive(holder: str) -> bool:
    """False only for a process of this host that is gone (or a zombie); unknown hosts count as alive."""
    pid_text, _, host = holder.removeprefix("pid ").partition("@")
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process nobody has reaped yet holds nothing
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_current(descriptor: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(descriptor).st_ino
    except FileNotFoundError:
        return False


def _replace_dead_lock(folder: Path, descriptor: int) -> bool:
    """Unlink the lock file `descriptor` opened if it is still in place, still held, and its holder
    still gone; one prepare at a time decides this (TAKEOVER_FILE), so a live lock is never removed."""
    import fcntl

    guard = os.open(folder / TAKEOVER_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not _is_current(descriptor, folder / LOCK_FILE):
            return False  # another prepare replaced it already
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(descriptor)
            if holder and not _holder_alive(holder):
                os.unlink(folder / LOCK_FILE)
                return True
            return False
        fcntl.flock(descriptor, fcntl.LOCK_UN)  # free after all: take it the normal way
        return False
    finally:
        os.close(guard)
