"""Atomic writers: what they may replace, the temporaries they leave when killed and who sweeps
them, and the one-line errors of a full, read-only or blocked file system."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections import namedtuple
from pathlib import Path

import pytest

from ichseq import atomic
from ichseq.atomic import (
    TEMP_MARKER,
    atomic_dir,
    check_free_space,
    output_errors,
    sweep_stale_temps,
    temp_dir_beside,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from ichseq.errors import DataError
from tests.conftest import mounted_tmpfs

DiskUsage = namedtuple("DiskUsage", "total used free")  # what shutil.disk_usage returns
NO_SPACE = re.compile(r"^no space left on (?P<mount>/\S*): ")


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def killed_child(code: str, timeout: float = 120) -> None:
    """Run ``code`` in a child Python that ends killed by SIGKILL (as ``kill -9`` or the
    out-of-memory killer would end a job): no ``finally``, no clean-up of any kind."""
    script = "import os, signal\ndef die(*_args, **_kwargs):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    proc = subprocess.run([sys.executable, "-c", script + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


# --------------------------------------------------------------------------- what may be replaced


def _holds_result(path: Path) -> bool:
    return (path / "result.json").is_file()


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    dest = tmp_path / "dcm"
    dest.mkdir()
    for i in range(3):
        (dest / f"IM{i:04d}.dcm").write_bytes(b"DICM" * 10)
    ran = []
    with pytest.raises(DataError) as exc:
        with atomic_dir(dest, owned=_holds_result, owned_by="no result.json in it") as tmp:
            ran.append(tmp)
    message = _one_line(exc)
    assert message.startswith(f"{dest}: already exists and was not written by ichseq (no result.json in it)")
    assert "remove it or choose another folder" in message
    assert ran == []  # refused before any work
    assert sorted(p.name for p in dest.iterdir()) == ["IM0000.dcm", "IM0001.dcm", "IM0002.dcm"]
    assert [p.name for p in tmp_path.iterdir()] == ["dcm"]


def test_without_owned_by_the_refusal_still_says_what_to_do(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"out: already exists and was not written by ichseq .*remove it or choose"):
        with atomic_dir(dest, owned=_holds_result):
            pass
    assert (dest / "notes.txt").read_text() == "mine"


def test_replaces_its_own_earlier_output(tmp_path):
    dest = tmp_path / "scan"
    with atomic_dir(dest, owned=_holds_result) as tmp:
        (tmp / "result.json").write_text("1")
        (tmp / "old-only.txt").write_text("x")
    with atomic_dir(dest, owned=_holds_result) as tmp:
        (tmp / "result.json").write_text("2")
    assert sorted(p.name for p in dest.iterdir()) == ["result.json"]
    assert (dest / "result.json").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["scan"]


def test_replaces_an_empty_folder(tmp_path):
    dest = tmp_path / "new"
    dest.mkdir()
    with atomic_dir(dest, owned=lambda _path: False) as tmp:
        (tmp / "a.txt").write_text("a")
    assert [p.name for p in dest.iterdir()] == ["a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["new"]


def test_a_folder_filled_while_the_job_ran_is_not_replaced(tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(DataError, match="not written by ichseq"):
        with atomic_dir(dest, owned=_holds_result) as tmp:
            (tmp / "result.json").write_text("1")
            dest.mkdir()  # someone else's files appear meanwhile
            (dest / "theirs.txt").write_text("theirs")
    assert [p.name for p in dest.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("owned", [None, _holds_result], ids=["owned=None", "owned=given"])
def test_a_file_in_the_place_of_the_folder_is_one_line_and_kept(tmp_path, owned):
    dest = tmp_path / "out"
    dest.write_text("a user's file")
    with pytest.raises(DataError) as exc:
        with atomic_dir(dest, owned=owned):
            pass
    assert _one_line(exc).startswith(f"{dest}: is a file, not a folder")
    assert dest.read_text() == "a user's file"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_file_in_the_place_of_a_parent_folder_is_one_line(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    with pytest.raises(DataError) as exc:
        with atomic_dir(blocker / "data" / "cache"):
            pass
    assert _one_line(exc).startswith(f"{blocker}: is a file, not a folder")
    with pytest.raises(DataError, match=f"^{re.escape(str(blocker))}: is a file, not a folder"):
        write_json_atomic(blocker / "x.json", {})
    assert blocker.read_text() == "not a folder"


# --------------------------------------------------------------------------- temporaries: names, sweeping


def test_temporary_folder_says_whose_it_is_and_the_result_does_not(tmp_path):
    dest = tmp_path / "cache"
    with atomic_dir(dest) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".cache.ichseq-tmp-")
        marker = json.loads((tmp / TEMP_MARKER).read_text())
        assert marker["host"] == socket.gethostname()
        assert marker["pid"] == os.getpid()
        (tmp / "slices.npy").write_bytes(b"x")
    assert [p.name for p in dest.iterdir()] == ["slices.npy"]


def test_a_temporary_folder_its_caller_renames_holds_nothing_but_what_the_caller_writes(tmp_path):
    tmp = temp_dir_beside(tmp_path / "ct-ich-jpg")
    assert tmp.name.startswith(".ct-ich-jpg.ichseq-tmp-")
    assert list(tmp.iterdir()) == []


def test_temporary_file_says_whose_it_is(tmp_path, monkeypatch):
    seen = []
    real_fsync = os.fsync

    def fsync(fd):  # the temporary file is complete and about to take its name
        seen.extend(p.name for p in tmp_path.iterdir())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_text_atomic(tmp_path / "metrics.json", "{}")
    (name,) = seen
    assert name.startswith(".metrics.json.ichseq-tmp-")
    assert str(os.getpid()) in name
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_sweep_removes_only_temporaries_of_dead_processes_of_this_host(tmp_path):
    parent = tmp_path / "results"
    parent.mkdir()
    # Not ours: a user's hidden folders and files that merely look alike.
    (parent / ".cache.abc").mkdir()
    (parent / ".cache.abc" / "slices.npy").write_bytes(b"theirs")
    (parent / ".cache.old").mkdir()
    (parent / ".notes.ichseq-tmp").write_text("theirs")
    # A job of this process still running (a concurrent run).
    live = temp_dir_beside(parent / "features")
    # A job on another machine of a shared file system: its pid means nothing here.
    killed_child(f"""
        import socket
        socket.gethostname = lambda: "another-node.cluster"
        from ichseq.atomic import atomic_dir
        with atomic_dir({str(parent / "model")!r}) as tmp:
            (tmp / "weights.pt").write_bytes(bytes(100))
            die()
    """)
    # Jobs killed on this machine: a folder being filled, a file about to take its name.
    killed_child(f"""
        from pathlib import Path
        from ichseq import atomic
        tmp = atomic.temp_dir_beside({str(parent / "cache")!r})
        (tmp / "slices.npy").write_bytes(bytes(1000))
        atomic.os.fsync = die
        atomic.write_bytes_atomic({str(parent / "cache.json")!r}, b"{{}}")
    """)
    before = _hidden(parent)
    stale = [n for n in before if n.startswith((".cache.ichseq", ".cache.json.ichseq"))]
    assert len(stale) == 2, before
    other_host = [n for n in before if n.startswith(".model.")]
    assert len(other_host) == 1, before

    removed = sweep_stale_temps(parent)

    assert sorted(p.name for p in removed) == stale
    assert _hidden(parent) == sorted([".cache.abc", ".cache.old", ".notes.ichseq-tmp", live.name, *other_host])
    assert (parent / ".cache.abc" / "slices.npy").read_bytes() == b"theirs"


def test_the_next_job_in_the_same_folder_sweeps_what_a_killed_one_left(tmp_path):
    killed_child(f"""
        from ichseq.atomic import atomic_dir
        with atomic_dir({str(tmp_path / "scan-1")!r}) as tmp:
            (tmp / "decision.json").write_text("{{}}")
            die()
    """)
    assert len(_hidden(tmp_path)) == 1
    with atomic_dir(tmp_path / "scan-2") as tmp:
        (tmp / "decision.json").write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["scan-2"]


def test_a_kill_between_the_two_renames_keeps_the_previous_folder(tmp_path):
    dest = tmp_path / "cache"
    with atomic_dir(dest) as tmp:
        (tmp / "cache.json").write_text("previous")
    killed_child(f"""
        from pathlib import Path
        from ichseq import atomic
        dest = Path({str(dest)!r})
        real_replace, real_rename = atomic.os.replace, atomic.os.rename
        def replace(src, dst, *args, **kwargs):
            if Path(dst) == dest:  # the new folder about to take the name: the old one is set aside
                die()
            return real_replace(src, dst, *args, **kwargs)
        def rename(src, dst, *args, **kwargs):
            if Path(dst) == dest:
                die()
            return real_rename(src, dst, *args, **kwargs)
        atomic.os.replace, atomic.os.rename = replace, rename
        with atomic.atomic_dir(dest) as tmp:
            (tmp / "cache.json").write_text("new")
    """)
    assert not dest.exists()  # the moment this handles: neither folder under the name
    assert len(_hidden(tmp_path)) == 2

    sweep_stale_temps(tmp_path)

    assert (dest / "cache.json").read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


# --------------------------------------------------------------------------- full, read-only, blocked


def _mount_of(message: str) -> Path:
    match = NO_SPACE.match(message)
    assert match, message
    return Path(match["mount"])


def test_no_space_in_a_folder_job_is_one_line_naming_the_file_system(tmp_path):
    dest = tmp_path / "cache"
    with pytest.raises(DataError) as exc:
        with atomic_dir(dest, needed_bytes=2_500_000) as tmp:
            (tmp / "slices.npy").write_bytes(b"x")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "masks.npy"))
    message = _one_line(exc)
    mount = _mount_of(message)
    assert os.path.ismount(mount) and Path(os.path.realpath(tmp_path)).is_relative_to(mount)
    assert "needs about 3 MB" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_no_space_in_a_file_writer_is_one_line_and_leaves_no_temporary(tmp_path, monkeypatch, code):
    def fsync(_fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(DataError) as exc:
        write_json_atomic(tmp_path / "metrics.json", {"auc": 0.9})
    assert _mount_of(_one_line(exc))
    assert str(tmp_path / "metrics.json") in str(exc.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code, says", [(errno.EACCES, "permission denied"), (errno.EPERM, "permission denied"),
                                        (errno.EROFS, "read-only file system")])
def test_unwritable_places_are_one_line(tmp_path, code, says):
    target = tmp_path / "predictions"
    with pytest.raises(DataError) as exc:
        with output_errors(target):
            raise OSError(code, os.strerror(code), str(target / ".x.tmp"))
    message = _one_line(exc)
    assert message.startswith(f"cannot write to {target}: {says}")
    assert "choose another folder" in message


def test_unwritable_folder_in_atomic_dir_is_one_line(tmp_path, monkeypatch):
    def mkdtemp(*_args, **_kwargs):  # as root a chmod would not stop the test; the call does
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr(atomic.tempfile, "mkdtemp", mkdtemp)
    with pytest.raises(DataError, match=f"^cannot write to {re.escape(str(tmp_path / 'out'))}: permission denied"):
        with atomic_dir(tmp_path / "out"):
            pass


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(OSError, match="injected"):
        with output_errors(tmp_path):
            raise OSError(errno.EIO, "injected")
    with pytest.raises(OSError, match="injected"):
        with atomic_dir(tmp_path / "out"):
            raise OSError("disk full (injected)")
    assert list(tmp_path.iterdir()) == []


def test_check_free_space(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: DiskUsage(10**9, 10**9 - 10**6, 10**6))
    check_free_space(tmp_path / "not" / "yet" / "made", 500_000)
    with pytest.raises(DataError) as exc:
        check_free_space(tmp_path / "not" / "yet" / "made", 5_000_000)
    message = _one_line(exc)
    assert _mount_of(message)
    assert "needs about 5 MB" in message and "1 MB free" in message


def test_a_real_full_file_system_is_one_line_and_leaves_nothing(tmp_path):
    with mounted_tmpfs(tmp_path / "small", "256k") as small:
        with pytest.raises(DataError) as exc:
            write_bytes_atomic(small / "big.bin", bytes(1 << 20))
        assert _mount_of(_one_line(exc)) == small
        with pytest.raises(DataError) as exc:
            with atomic_dir(small / "cache") as tmp:
                (tmp / "slices.npy").write_bytes(bytes(1 << 20))
        assert _mount_of(_one_line(exc)) == small
        assert list(small.iterdir()) == []


def test_a_real_read_only_file_system_is_one_line(tmp_path):
    with mounted_tmpfs(tmp_path / "ro", read_only=True) as ro:
        with pytest.raises(DataError) as exc:
            write_json_atomic(ro / "metrics.json", {})
        assert _one_line(exc).startswith(f"cannot write to {ro / 'metrics.json'}: read-only file system ({ro})")
        with pytest.raises(DataError, match=f"^cannot write to {re.escape(str(ro / 'cache'))}: read-only"):
            with atomic_dir(ro / "cache"):
                pass
