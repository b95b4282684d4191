"""The supervisor of the demo and the drills: a service that exits asking to be started again is started
again, as Kubernetes would; one stopped, killed or finished on purpose is left alone."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from haochaping.liveness import STALL_EXIT_CODE
from haochaping.simulator.processes import Service, Supervisor

# Exits with the stall code on its first run (leaving a marker), then runs until stopped.
ONCE_STALLED = f"""
import pathlib, sys, time
marker = pathlib.Path(sys.argv[1])
if not marker.exists():
    marker.write_text("stalled once")
    print("stalled", flush=True)
    sys.exit({STALL_EXIT_CODE})
print("running again", flush=True)
time.sleep(60)
"""


def _service(tmp_path: Path, name: str, code: str) -> Service:
    return Service(
        name, [sys.executable, "-c", code, str(tmp_path / f"{name}.marker")], tmp_path / f"{name}.log"
    )


def _wait_for(condition: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.1)
    return False


def test_a_service_that_exits_to_be_restarted_is_started_again_and_the_others_are_not(tmp_path: Path) -> None:
    stalled = _service(tmp_path, "worker-1", ONCE_STALLED)
    finished = _service(tmp_path, "worker-2", "import sys; sys.exit(0)")
    failed = _service(tmp_path, "worker-3", "import sys; sys.exit(1)")
    killed = _service(tmp_path, "worker-4", "import time; time.sleep(60)")
    services = [stalled, finished, failed, killed]
    for s in services:
        s.start()
    restarted: list[str] = []
    supervisor = Supervisor(lambda: services, every=0.1, on_restart=lambda s, code: restarted.append(s.name))
    supervisor.start()
    try:
        killed.kill()
        assert _wait_for(lambda: "running again" in stalled.log_path.read_text().splitlines())
        time.sleep(0.5)  # a few more rounds: nothing else is started
        assert supervisor.restarts == [("worker-1", STALL_EXIT_CODE)]
        assert restarted == ["worker-1"]
        assert stalled.running()
        assert not finished.running() and not failed.running() and not killed.running()
        lines = stalled.log_path.read_text().splitlines()  # the same log, the restart said in it
        restart = f"--- exited with {STALL_EXIT_CODE}: starting it again"
        assert lines.index("stalled") < lines.index(restart) < lines.index("running again")
    finally:
        supervisor.stop()
        for s in services:
            s.stop()
