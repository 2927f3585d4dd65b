"""pytest plugin: run MLflow's own server tests against Tarn instead of MLflow's server.

MLflow's suites (tests/tracking/test_rest_tracking.py, test_model_registry.py,
test_mlflow_artifacts.py) start their server in one of three ways; this plugin replaces each
with a fresh `tarn up` on a temporary home, and hands the tests Tarn's MLflow URL for the
default workspace:

- `tests.tracking.integration_test_utils.ServerThread` (an in-process uvicorn app),
- `tests.tracking.integration_test_utils._init_server` (a uvicorn/flask subprocess),
- `test_mlflow_artifacts._launch_server` (the `mlflow server` CLI, with its fixture).

MLflow's own store set-up (`initialize_backend_stores`, `SqlAlchemyStore(...)`) becomes a no-op:
Tarn keeps its own store. Tarn needs a token; the plugin puts it in MLFLOW_TRACKING_TOKEN for the
client and adds it to raw `requests` calls that go to the server under test, which MLflow's tests
make without credentials. Nothing else about the tests is changed.

Run it with scripts/mlflow-suite (which says how to get MLflow's test files).
"""

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from unittest import mock

import pytest
import requests

TARN = os.environ.get("TARN_BIN", "tarn")
_servers: list["TarnServer"] = []


class TarnServer:
    """One `tarn up` on a temporary home, stopped (process group and home) by `stop()`."""

    def __init__(self, port: int = 0):
        self.home = pathlib.Path(tempfile.mkdtemp(prefix="tarn-mlflow-suite-"))
        self.log = open(self.home.parent / (self.home.name + ".log"), "wb")
        self.proc = subprocess.Popen(
            [TARN, "up", "--home", str(self.home / "home"), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,
        )
        base = None
        for raw in self.proc.stdout:
            line = raw.decode().strip()
            if line.startswith("API:"):
                base = line.split()[1].removesuffix("/api/v1")
                break
        if base is None:
            raise RuntimeError(f"tarn up exited; see {self.log.name}")
        creds = json.loads((self.home / "home" / "credentials.json").read_text())
        self.base = base
        self.token = creds["token"]
        self.url = f"{base}/ws/default/mlflow"
        deadline = time.time() + 10
        while requests.get(f"{base}/api/v1/health", timeout=1).status_code != 200:
            if time.time() > deadline:
                raise RuntimeError("tarn did not become healthy")
            time.sleep(0.01)
        _servers.append(self)
        os.environ["MLFLOW_TRACKING_TOKEN"] = self.token

    def artifact_root(self) -> pathlib.Path:
        """Where the default workspace's `workspaceartifactstore` keeps its files on disk."""
        r = requests.get(
            f"{self.base}/api/v1/workspaces/default/datastores/workspaceartifactstore",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        r.raise_for_status()
        body = r.json()
        return pathlib.Path((body.get("spec") or body)["path"])

    def stop(self):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc.stdout.close()
        self.log.close()
        if self in _servers:
            _servers.remove(self)
        if not _servers:
            os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
        shutil.rmtree(self.home, ignore_errors=True)
        os.unlink(self.log.name)


class TarnServerThread:
    """Stands in for `ServerThread(app, port)`: a context manager that yields the URL."""

    def __init__(self, app=None, port=None):
        self.server = None

    def __enter__(self) -> str:
        self.server = TarnServer()
        return self.server.url

    def __exit__(self, *exc):
        self.server.stop()
        return None


@contextlib.contextmanager
def tarn_init_server(backend_uri, root_artifact_uri, extra_env=None, app=None, server_type=None):
    """Stands in for `_init_server(...)`: yields the URL of a fresh Tarn."""
    if app is not None:
        pytest.skip(f"needs MLflow's own server app {app!r}")
    server = TarnServer()
    try:
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def tarn_launch_server(host, port, backend_store_uri, default_artifact_root, destination):
    """Stands in for test_mlflow_artifacts' `mlflow server ... --artifacts-destination D`.

    The fixture computes the artifact root as `http://host:port/api/2.0/mlflow-artifacts/...`;
    Tarn serves the default workspace's MLflow at `/ws/default/mlflow`, so the fixture's URL is
    rewritten (see `artifacts_server` below) and `destination` is linked to Tarn's artifact
    store, where the tests look for the files they uploaded.
    """
    server = TarnServer(port)
    try:
        root = server.artifact_root()
        root.mkdir(parents=True, exist_ok=True)
        if os.path.isdir(destination):
            os.rmdir(destination)
        os.symlink(root, destination)
        yield server
    finally:
        server.stop()


def _authorize(original):
    """Adds Tarn's token to raw HTTP calls MLflow's tests make to the server under test."""

    def request(self, method, url, *args, **kwargs):
        for server in _servers:
            if str(url).startswith(server.base):
                headers = dict(kwargs.get("headers") or {})
                if not any(k.lower() == "authorization" for k in headers):
                    headers["Authorization"] = f"Bearer {server.token}"
                kwargs["headers"] = headers
                break
        return original(self, method, url, *args, **kwargs)

    return request


def pytest_configure(config):
    import mlflow.server.handlers as handlers
    import tests.tracking.integration_test_utils as itu

    mock.patch.object(itu, "ServerThread", TarnServerThread).start()
    mock.patch.object(itu, "_init_server", tarn_init_server).start()
    mock.patch.object(handlers, "initialize_backend_stores", lambda *a, **k: None).start()
    mock.patch.object(
        requests.Session, "request", _authorize(requests.Session.request)
    ).start()
    _patch_artifacts_module()


def _patch_artifacts_module():
    """Imports test_mlflow_artifacts first and swaps its server fixture for one running Tarn."""
    try:
        import tests.tracking.test_mlflow_artifacts as arts
    except ImportError:
        return
    @pytest.fixture(scope="module")
    def artifacts_server():
        with tempfile.TemporaryDirectory() as tmpdir:
            from tests.helper_functions import LOCALHOST, get_safe_port

            port = get_safe_port()
            destination = os.path.join(tmpdir, "mlartifacts")
            with tarn_launch_server(LOCALHOST, port, None, None, destination) as server:
                root = f"{server.url}/api/2.0/mlflow-artifacts/artifacts"
                yield arts.ArtifactsServer(None, root, destination, server.url, server.proc)

    arts._launch_server = tarn_launch_server
    arts.artifacts_server = artifacts_server


# Tests of MLflow features outside Tarn's MLflow surface, each with the reason. Everything else
# in the suites runs. A name matches when it is the test function's name or starts with a key
# that ends in "*".
SKIPS = {
    # MLflow Tracing and GenAI evaluation run (traces, spans over OTLP, assessments, links to
    # runs, evaluation datasets); these parts of them are not in Tarn yet.
    "test_online_scoring_config": "GenAI scorers are not part of Tarn",
    "test_create_promptlab_run_handler_*": "the prompt lab (a UI feature of MLflow's) is not part of Tarn",
    # The AI gateway and its secrets store: Tarn's secrets live in its vault, and its serving
    # is online endpoints.
    "test_gateway_proxy_handler_rejects_invalid_requests": "the MLflow AI gateway is not part of Tarn",
    "test_*secret*": "the MLflow AI gateway's secrets are not part of Tarn (Tarn has its vault)",
    "test_*endpoint*": "the MLflow AI gateway's endpoints are not part of Tarn",
    "test_model_definitions": "the MLflow AI gateway is not part of Tarn",
    "test_update_model_definition_provider": "the MLflow AI gateway is not part of Tarn",
    "test_list_providers": "the MLflow AI gateway is not part of Tarn",
    "test_list_models": "the MLflow AI gateway is not part of Tarn",
    "test_get_provider_config": "the MLflow AI gateway is not part of Tarn",
    # MLflow's web UI's own calls: Tarn serves its own UI (the studio).
    "test_*graphql*": "GraphQL serves MLflow's own web UI; Tarn has its own UI",
    # Tarn always proxies artifacts into the workspace's artifact store, so run and experiment
    # artifact URIs are `mlflow-artifacts:/…`; these tests assert the local `file://` root the
    # in-process MLflow server was started with (and build sources by cutting "file://" off).
    "test_artifacts": "asserts a local file:// artifact root; Tarn proxies artifacts (mlflow-artifacts:/)",
    "test_create_model_version_with_path_source": "builds sources from a file:// artifact root; Tarn proxies artifacts",
    "test_create_model_version_with_file_uri": "asserts a local file:// artifact root; Tarn proxies artifacts",
    # The CLI tests' `mlflow experiments` calls go to the test's own SQLite file: MLflow's
    # conftest fixes the tracking URI globally (tracking_uri_mock), which wins over the env the
    # test passes, so they never reach a server. (The CLI against Tarn is in Tarn's own tests.)
    "test_delete_restore_experiment_cli": "its CLI call never reaches the server (tracking_uri_mock)",
    "test_rename_experiment_cli": "its CLI call never reaches the server (tracking_uri_mock)",
    "test_add_dataset_to_experiments_rest_tracking": "its add_dataset_to_experiments call never reaches the server (tracking_uri_mock)",
    "test_remove_dataset_from_experiments_rest_tracking": "its remove_dataset_from_experiments call never reaches the server (tracking_uri_mock)",
    "test_add_multiple_experiments_at_once_rest_tracking": "its add_dataset_to_experiments call never reaches the server (tracking_uri_mock)",
    "test_idempotent_add_experiments_rest_tracking": "its add_dataset_to_experiments call never reaches the server (tracking_uri_mock)",
    # Where the checkout (3.11) and the pinned 3.17.2 differ, Tarn answers as 3.17.2.
    "test_get_metric_history_bulk_interval_respects_max_results": "it expects the 3.11 checkout's sampling of all runs together; Tarn samples each run on its own, as the pinned 3.17.2 does",
    # Tarn's model names are Azure ML asset names (no spaces), shared with `tarn model`.
    "test_update_registered_model_flow": "renames to 'UpdateRMTest 2': Tarn model names follow Azure ML's asset rule (no spaces)",
    # Tests of MLflow's own server or store rather than of a server's protocol.
    "test_create_model_version_with_validation_regex": "starts MLflow's own `mlflow server` to test one of its settings",
    "test_rest_get_model_version_artifact_api_proxied_artifact_root": "registers its version straight into a SQLite store, bypassing the server (whose source check would refuse 'mlflow-artifacts:')",
    # Docker, which this machine does not have, and MLflow's server internals.
    "test_mlflow_artifacts_example": "runs MLflow's own server in docker compose",
    "test_get_metric_history_bulk_calls_optimized_impl_when_expected": "mocks a function inside MLflow's server",
}


def _skip_reason(name: str) -> str | None:
    import fnmatch

    base = name.split("[", 1)[0]
    for pattern, reason in SKIPS.items():
        if fnmatch.fnmatchcase(base, pattern):
            return reason
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if reason := _skip_reason(item.name):
            item.add_marker(pytest.mark.skip(reason=f"Tarn: {reason}"))


def pytest_unconfigure(config):
    for server in list(_servers):
        server.stop()


if __name__ == "__main__":
    sys.exit("load with: pytest -p tarn_mlflow_suite")
