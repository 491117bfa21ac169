"""Server tests run a real Jupyter server (pytest-jupyter) with the extension enabled,
under a JupyterHub-style base URL. The browser tests are in ../browser_tests, run by
their own pytest process (pytest-jupyter's event loop and Playwright's cannot share one)."""

import pytest

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
def jp_base_url():
    return "/user/tester/"


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"packlab_jupyterlab": True}}}
