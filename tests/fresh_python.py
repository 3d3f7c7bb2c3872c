"""Run code in a fresh interpreter: for measurements that this test process's other threads would skew
(tracemalloc counts every thread) and for checks of what importing the package pulls in."""

from __future__ import annotations

import subprocess
import sys


def run_python(code: str, *args: str, cwd: str | None = None, timeout: float = 300) -> str:
    """`python -c code args...` -> its stdout; fails the test with the child's stderr if it fails."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout
