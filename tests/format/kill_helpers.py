"""Running a child process that writes a dataset and killing it (the crash tests)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time


def run_and_kill(code: str, args: list[str], after: float | None, env=None) -> tuple[int, str]:
    """Run `code` with `args` in a fresh interpreter; once it prints "ready", SIGKILL it
    `after` seconds later (None: wait for it to end, e.g. to kill itself). Returns the
    exit code and its stderr. A child that never gets there is killed, never left."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"ready", proc.stderr.read().decode()
        if after is not None:
            time.sleep(after)
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, proc.stderr.read().decode()
