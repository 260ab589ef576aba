"""The termination-message file Kubernetes reads, written by real ``engine-init`` processes.

``ENGINE_INIT_TERMINATION_LOG`` points the job at a file in the test's folder instead of the
kubelet's ``/dev/termination-log``; the kubelet creates that file before the container starts,
so the tests do the same where a write is expected."""

from __future__ import annotations

import os
import stat
import subprocess
import time

import yaml

from app.termination import MAX_BYTES
from tests.helpers import cli, tmpfs, write_job_config


def _bad_config(tmp_path, corpus, **extra):
    return write_job_config(tmp_path, corpus, workspace_mb=-1, **extra)


def _run(job, log, **kw) -> subprocess.CompletedProcess[str]:
    return cli("--config", str(job), "run", env={"ENGINE_INIT_TERMINATION_LOG": str(log)}, **kw)


def _error_line(stderr: str) -> str:
    (line,) = [x for x in stderr.splitlines() if x.startswith("engine-init: error: ")]
    return line


def test_a_failure_writes_the_error_line_and_the_exit_code(tmp_path, corpus):
    log = tmp_path / "termination-log"
    log.touch()
    result = _run(_bad_config(tmp_path, corpus), log)
    assert result.returncode == 78
    line = _error_line(result.stderr)
    assert "workspace_mb: Input should be greater than 0" in line
    assert log.read_text() == f"{line} (exit code 78)\n"


def test_success_leaves_the_file_alone(tmp_path, corpus):
    log = tmp_path / "termination-log"
    log.touch()
    assert _run(write_job_config(tmp_path, corpus), log).returncode == 0
    assert log.read_bytes() == b""


def test_a_long_reason_is_cut_to_4_kb_keeping_the_exit_code(tmp_path, corpus):
    # A config error names at most 5 problems, each clipped: the line is made long by the
    # config's own path (12 folders of 200 bytes) and long unknown keys, in 2-byte letters.
    deep = tmp_path.joinpath(*[f"{i:02d}" + "д" * 99 for i in range(12)])
    deep.mkdir(parents=True)
    job = _bad_config(tmp_path, corpus)
    doc = yaml.safe_load(job.read_text())
    doc.update({f"ключ_{i:03d}_" + "я" * 200: i for i in range(400)})  # 400 unknown keys
    job = deep / "config.yaml"
    job.write_text(yaml.safe_dump(doc, allow_unicode=True))
    log = tmp_path / "termination-log"
    log.write_bytes(b"x" * 10_000)  # whatever was there is replaced, not appended to
    result = _run(job, log)
    assert result.returncode == 78
    data = log.read_bytes()
    assert len(_error_line(result.stderr).encode()) > MAX_BYTES + 200
    assert MAX_BYTES - 2 <= len(data) <= MAX_BYTES  # a 2-byte letter may not fit at the cut
    text = data.decode("utf-8")  # cut on a character boundary
    assert text.endswith(" (exit code 78)\n")
    assert _error_line(result.stderr).startswith(text.removesuffix(" (exit code 78)\n"))


def test_a_fifo_there_does_not_hang_the_job(tmp_path, corpus):
    fifo = tmp_path / "termination-log"
    os.mkfifo(fifo)
    job = _bad_config(tmp_path, corpus)
    started = time.monotonic()
    assert _run(job, fifo, timeout=60).returncode == 78  # no reader: a blocking open would wait
    # With a reader holding it open, a write would succeed: it must not happen either.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert _run(job, fifo, timeout=60).returncode == 78
        try:
            leaked = os.read(reader, 65536)
        except BlockingIOError:
            leaked = b""
        assert leaked == b""
    finally:
        os.close(reader)
    assert time.monotonic() - started < 50
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_missing_file_is_not_created_and_a_folder_is_ignored(tmp_path, corpus):
    job = _bad_config(tmp_path, corpus)
    absent = tmp_path / "termination-log"
    assert _run(job, absent).returncode == 78
    assert not absent.exists()  # as root, the job must not plant a file in a host's /dev
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert _run(job, folder).returncode == 78
    assert list(folder.iterdir()) == []


def test_a_symlink_is_not_followed(tmp_path, corpus):
    victim = tmp_path / "victim.txt"
    victim.write_text("not the job's\n")
    link = tmp_path / "termination-log"
    link.symlink_to(victim)
    assert _run(_bad_config(tmp_path, corpus), link).returncode == 78
    assert victim.read_text() == "not the job's\n" and link.is_symlink()


def test_an_unwritable_file_is_ignored(tmp_path, corpus):
    """A file on a read-only filesystem (as root, permission bits would not stop the write)."""
    job = _bad_config(tmp_path, corpus)
    with tmpfs(tmp_path / "ro", "size=64k,mode=755") as ro:
        log = ro / "termination-log"
        log.write_text("old\n")
        remount = subprocess.run(["mount", "-o", "remount,ro", str(ro)], capture_output=True)
        assert remount.returncode == 0, remount.stderr
        result = _run(job, log)
        assert result.returncode == 78 and "Traceback" not in result.stderr
        assert log.read_text() == "old\n"
