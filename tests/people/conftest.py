"""The people tests run on the shared store fixtures, with a public URL (reset links
need one) and a real SMTP server where mail matters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tallykey.settings import Settings

# the test clients speak HTTP (an https public URL would make cookies Secure)
PUBLIC_URL = "http://keys.acme.test"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path / "data", region="eu1",
                    public_url=PUBLIC_URL)


from ..console.conftest import admin, member, new_client  # noqa: E402, F401 - console clients
from ..notify.conftest import smtp_port, smtp_server  # noqa: E402, F401 - real SMTP fixtures
