"""Debian's chromium, headless, for the browser tests: a fresh profile and HOME per run (the
``chromium`` fixture, which skips without it, is in tests/e2e/conftest.py)."""

import subprocess
from pathlib import Path

from tests.conftest import subprocess_env

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def run_chromium(chromium: str, tmp: Path, *args: str, extra_flags: tuple[str, ...] = ()
                 ) -> subprocess.CompletedProcess:
    """Run chromium with :data:`FLAGS`, a fresh ``--user-data-dir`` and HOME under ``tmp``."""
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"  # fresh profile per run
    # HOME too: Chromium writes NSS and crash files there, not only under the profile
    proc = subprocess.run([chromium, *FLAGS, *extra_flags, f"--user-data-dir={profile}",
                           *args], capture_output=True, text=True, timeout=120,
                          env=subprocess_env(HOME=str(tmp)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
