"""The report and optuna-dashboard in a real browser: headless Chromium, driven over the DevTools protocol.

Chromium is the Debian package `chromium` (`.ci/run` installs it); without it the browser tests
skip and say so. The DevTools protocol runs over a pipe (--remote-debugging-pipe), so no
WebSocket client is needed.
"""

import base64
import fcntl
import io
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState, create_trial

from search.config import EnsembleSpec, RunSpec
from search.dispatch.run import run_study
from search.ensemble.build import run_ensemble
from search.study.artifacts import ARTIFACT_ATTR

CHROMIUM = next(
    (path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
)
TIMEOUT = 90.0  # seconds; a loaded 2-core CI machine renders a 5 MB page slowly


class DevTools:
    """Headless Chromium and one page, spoken to in DevTools protocol messages over a pipe."""

    def __init__(self, profile: Path) -> None:
        commands_r, commands_w = os.pipe()
        replies_r, replies_w = os.pipe()
        # Out of the way of 3 and 4, which the child needs for the protocol.
        commands_r, replies_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (commands_r, replies_w))

        def wire() -> None:  # in the child: Chromium reads commands on fd 3 and answers on fd 4
            os.dup2(commands_r, 3)
            os.dup2(replies_w, 4)

        self.process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--enable-unsafe-swiftshader",  # software WebGL for plotly's parallel coordinates
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,  # os.pipe() ends are close-on-exec; only fds 3 and 4 are passed
            preexec_fn=wire,
        )
        self.commands, self.replies = commands_w, replies_r
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=1400,
            height=1000,
            deviceScaleFactor=1,
            mobile=False,
        )

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (OSError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.commands)
        os.close(self.replies)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _read(self) -> dict:
        deadline = time.monotonic() + TIMEOUT
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.replies], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self.replies, 1 << 20)
            if not chunk:
                raise OSError("chromium closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return result["result"].get("value")

    def open(self, url: str, ready: str) -> None:
        """Navigate and wait until the JavaScript expression `ready` is true."""
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + TIMEOUT
        while not self.evaluate(f"document.readyState === 'complete' && Boolean({ready})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: not ready after {TIMEOUT:.0f}s ({ready})")
            time.sleep(0.25)

    def errors(self) -> list[str]:
        """Uncaught exceptions, console.error calls and browser log errors since the last open()."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(params["entry"].get("text", ""))
        return found

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path: Path) -> None:
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=1400,
            height=min(height, 16000),
            deviceScaleFactor=1,
            mobile=False,
        )
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    devtools = DevTools(tmp_path_factory.mktemp("chromium-profile"))
    yield devtools
    devtools.close()


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """A real cnn study with an ensemble saved where the report looks by default, and a synthetic one of 40 trials."""
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{root}/studies.db"
    spec = RunSpec(space="cnn", study="cnn", trials=3, epochs=1, limit=300, storage=url, reference=False, threads=1)
    summary = run_study(spec, out=io.StringIO())
    assert summary.counts.get("complete", 0) >= 1
    saved = root / "studies" / "ensembles" / "20250101-000000-greedy"
    run_ensemble(
        EnsembleSpec(
            studies="cnn", limit=300, storage=url, out=str(root / "submission.csv"), save=str(saved), threads=1
        ),
        out=io.StringIO(),
    )
    add_synthetic_study(url, "synthetic", 40)
    torch.set_num_threads(threads)
    return root, url


def add_synthetic_study(url: str, name: str, trials: int) -> None:
    """Enough completed and pruned trials for importances, parallel coordinates and slices."""
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    width = optuna.distributions.IntDistribution(8, 64)
    kind = optuna.distributions.CategoricalDistribution(["adamw", "sgd"])
    for number in range(trials):
        params = {
            "train.lr": 10 ** (-4 + 3 * number / trials),
            "cnn.width": 8 + number,
            "train.optimizer": ("adamw", "sgd")[number % 2],
        }
        value = 0.9 + 0.002 * number
        pruned = number % 3 == 2
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
                value=None if pruned else value,
                params=params,
                distributions={"train.lr": lr, "cnn.width": width, "train.optimizer": kind},
                user_attrs={"family": "cnn", "params": 1000 * number + 500, "train_seconds": 10.0 + number},
                intermediate_values={1: value - 0.1} if pruned else {1: value - 0.1, 2: value},
            )
        )


def digit_search(*args, cwd: Path) -> subprocess.CompletedProcess:
    """The command line in its own process, in `cwd` (where it looks for studies/ensembles)."""
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
@needs_chromium
def test_the_report_renders_every_figure_without_script_errors(studies, browser):
    root, url = studies
    done = digit_search("report", "--storage", url, "--out", root / "reports", cwd=root)
    assert done.returncode == 0, done.stderr
    page = next((root / "reports").glob("report-*.html"))
    assert next((root / "reports").glob("trials-*.csv")).read_text().count("\n") == 1 + 3 + 40

    browser.open(
        page.as_uri(),
        ready="document.querySelectorAll('.plotly-graph-div').length > 0 && [...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('.main-svg'))",
    )
    figures = browser.evaluate("document.querySelectorAll('.plotly-graph-div').length")
    rendered = browser.evaluate(
        "[...document.querySelectorAll('.plotly-graph-div')].filter(d => d.querySelector('svg.main-svg')).length"
    )
    # across studies 5, ensemble 2, cnn 4 (too few trials for importances), synthetic 5
    assert figures == rendered == 16
    assert browser.evaluate("document.querySelectorAll('.gallery img').length") >= 1
    assert browser.evaluate(
        "[...document.querySelectorAll('.gallery img')].every(i => i.complete && i.naturalWidth === 28)"
    )
    text = browser.evaluate("document.body.innerText")
    assert "Study cnn" in text and "Study synthetic" in text and "20250101-000000-greedy" in text
    assert "parameter importances need at least" in text  # the small study says what is missing
    # ... in a line under its figures, not in a card stretched beside the slice plot
    assert browser.evaluate(
        "[...document.querySelectorAll('section[id^=study-] .card')].every(c => c.querySelector('.plotly-graph-div'))"
    )
    assert browser.evaluate("document.querySelectorAll('#study-cnn .absent li').length") == 1
    assert browser.errors() == []
    assert [u for u in browser.requests() if not u.startswith(("file:", "data:", "about:"))] == []  # works offline
    browser.screenshot(root / "report.png")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
@needs_chromium
def test_the_dashboard_serves_the_studies_and_their_artifacts(studies, browser):
    root, url = studies
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "search.cli", "dashboard", "--storage", url, "--port", str(port)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                listing = get_json(f"{base}/api/studies")
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline, "the dashboard did not answer"
                time.sleep(0.25)
        names = {s["study_name"]: s["study_id"] for s in listing["study_summaries"]}
        assert set(names) == {"cnn", "synthetic"}

        # a completed trial lists the weights and probabilities it stored, and they download
        detail = get_json(f"{base}/api/studies/{names['cnn']}")
        trial = next(t for t in detail["trials"] if t["state"] == "Complete")
        stored = optuna.load_study(study_name="cnn", storage=url).trials[trial["number"]].user_attrs[ARTIFACT_ATTR]
        assert set(stored.values()) <= {a["artifact_id"] for a in trial["artifacts"]}
        with urllib.request.urlopen(
            f"{base}/artifacts/{names['cnn']}/{trial['trial_id']}/{stored['val_probs']}", timeout=10
        ) as response:
            assert response.status == 200 and response.read().startswith(b"\x93NUMPY")

        browser.open(f"{base}/dashboard/", ready="document.body.innerText.includes('synthetic')")
        assert browser.evaluate("document.title") == "Optuna Dashboard"
        assert browser.errors() == []
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/dashboard/" in out


@pytest.mark.slow
@needs_chromium
def test_the_browser_check_sees_script_errors_and_missing_figures(tmp_path, browser):
    page = tmp_path / "broken.html"
    page.write_text(
        "<html><body><div class='plotly-graph-div'></div><script>console.error('boom'); missingFunction();</script></body></html>"
    )
    browser.open(page.as_uri(), ready="true")
    errors = browser.errors()
    assert any("boom" in e for e in errors) and any("missingFunction" in e for e in errors)
    assert (
        browser.evaluate(
            "[...document.querySelectorAll('.plotly-graph-div')].filter(d => d.querySelector('svg.main-svg')).length"
        )
        == 0
    )
