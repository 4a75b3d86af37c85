"""Fixtures of the end-to-end tests."""

import shutil

import pytest


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; the browser tests skip, saying why, where it is not installed."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
    return path
