"""Start and stop a real Orthanc with the plugin loaded, through the same launcher as ``make run``.

Used by the integration-test fixtures and the benchmarks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from ai_orchestrator.gateway.http_gateway import ORTHANC_CONNECTION_LIMITS

REPO_DIR = Path(__file__).resolve().parent.parent
LAUNCHER = REPO_DIR / "scripts" / "run-orthanc.sh"
# The tests' studies are small: their model hosts warm up on the 12 slices the built-in models need at least, not on
# the product's study of the usual size (WarmUpSlices, 3-4 s of a 2-core machine at each host start).
TEST_WARM_UP_SLICES = 12


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OrthancServer:
    def __init__(self, data_dir: Path, http_port: int | None = None, dicom_port: int | None = None,
                 stable_age: int = 1, extra_env: dict | None = None, cwd: Path | None = None,
                 warm_up_slices: int | None = TEST_WARM_UP_SLICES):
        """``warm_up_slices``: the WarmUpSlices setting unless AI_ORCHESTRATOR_SETTINGS names it; None: the
        product's default, as the benches measure it."""
        self.data_dir = Path(data_dir)
        self.http_port = http_port or free_port()
        self.dicom_port = dicom_port or free_port()
        self.stable_age = stable_age
        self.events_port = free_port()  # the orchestrator's own port; kept across restarts
        self.extra_env = dict(extra_env or {})
        self.cwd = cwd  # Orthanc's working directory (None: this process's)
        self.warm_up_slices = warm_up_slices
        self.process: subprocess.Popen | None = None
        self.client = httpx.Client(base_url=self.base_url, timeout=60, limits=ORTHANC_CONNECTION_LIMITS)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def own_port_url(self) -> str:
        """The UPS-RS base URL of the orchestrator's own port."""
        return f"http://127.0.0.1:{self.events_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "orthanc.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 60) -> OrthancServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ,
               "ORTHANC_DATA_DIR": str(self.data_dir),
               "ORTHANC_HTTP_PORT": str(self.http_port),
               "ORTHANC_DICOM_PORT": str(self.dicom_port),
               "ORTHANC_STABLE_AGE": str(self.stable_age),
               "AI_ORCHESTRATOR_WS_PORT": str(self.events_port),
               **self.extra_env}
        if self.warm_up_slices is not None:
            settings = json.loads(env.get("AI_ORCHESTRATOR_SETTINGS") or "{}")
            env["AI_ORCHESTRATOR_SETTINGS"] = json.dumps({"WarmUpSlices": self.warm_up_slices, **settings})
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([str(LAUNCHER)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=self.cwd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                if self.client.get("/system").status_code in (200, 401):
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout} s:\n{self.log()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Stop Orthanc (SIGTERM by default, SIGKILL to simulate a crash); answers its exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def restart(self) -> OrthancServer:
        self.stop()
        return self.start()

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
        self.client.close()
