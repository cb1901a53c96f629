"""A pytest plugin (``-p benchmarks.pytest_unfinished``): the tests that started and never finished.

gpu_proof interrupts pytest at its deadline. ``--durations`` names the slowest tests that
finished; the ones the interrupt cut off, the slowest of all, are named by none of pytest's
reports. This plugin lists them at the end of the session, with how long each had run, in
the terminal summary and, where $FUSED_RNN_UNFINISHED names a file, there as JSON lines
{"nodeid", "seconds"}. Under pytest-xdist the controller hears of each worker's starts and
finishes (pytest_runtest_logstart/logfinish), so it knows what every worker was running.
"""

import json
import os
import time

ENV = "FUSED_RNN_UNFINISHED"
_started = {}   # nodeid: time.monotonic() at its start
# When a KeyboardInterrupt stopped the session: the tests ran until then, not through xdist's
# teardown after it (up to 10 s, while a worker is busy).
_interrupted = []


def pytest_runtest_logstart(nodeid, location):
    _started[nodeid] = time.monotonic()


def pytest_runtest_logfinish(nodeid, location):
    _started.pop(nodeid, None)


def pytest_keyboard_interrupt(excinfo):
    _interrupted.append(time.monotonic())


def unfinished():
    """[(nodeid, seconds it ran)], the longest-running first."""
    end = _interrupted[0] if _interrupted else time.monotonic()
    return sorted(((nodeid, end - start) for nodeid, start in _started.items()), key=lambda item: -item[1])


def pytest_terminal_summary(terminalreporter):
    running = unfinished()
    if running:
        terminalreporter.section(f"{len(running)} tests started and not finished")
        for nodeid, seconds in running:
            terminalreporter.write_line(f"{seconds:7.1f}s  {nodeid}")


def pytest_unconfigure(config):
    path = os.environ.get(ENV)
    if path and not hasattr(config, "workerinput"):    # the controller's view, not a worker's
        with open(path, "w") as f:
            for nodeid, seconds in unfinished():
                f.write(json.dumps(dict(nodeid=nodeid, seconds=round(seconds, 1))) + "\n")
