"""The ``load`` marker, and the fixtures the load, fault and soak tests share."""

from __future__ import annotations

import logging

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "load: load, fault and soak tests of the proxy servers (bounded in count and time; run by default)",
    )


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture the server's per-connection log lines (INFO), and nothing noisier."""
    caplog.set_level(logging.INFO, logger="socks_sansio.server")
    return caplog
