"""Runtime tests run on asyncio and trio through anyio's pytest plugin."""

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param
