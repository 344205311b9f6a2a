"""End to end in JupyterLab: the learning-rate chapter's live control trains.

JupyterLab is started as a subprocess (127.0.0.1, a free port, a fixed token)
on a temporary copy of book/, with its own Jupyter and IPython directories (the
user's are never read or written) and the kernel environment of
tools/execute_notebooks.py (the working tree's lmlib first on the path). In
headless Chromium the test opens book/10_learning_rate.ipynb, clears the stored
outputs, runs all cells from the Run menu, and then uses the live learning-rate
control (``lmlib.notebook.live_control``): "Train" at the initial value, the
slider moved to another value, "Train" again. Each click must really train (the
status line says "done: learning rate = ..." only after ``run`` returned) and
draw the curves (a PNG in the control's output area, a different one for the
new value).

Offline: the news feed, the update check and the PyPI extension manager are
switched off on the server, the announcements plugin is disabled, and the
browser aborts every request that is not to the local server.

On failure a screenshot is saved as ``jupyterlab.png`` in the test's tmp dir
and the server log is shown.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOK = "10_learning_rate.ipynb"
sys.path.insert(0, str(ROOT / "tools"))

from execute_notebooks import kernel_environment  # noqa: E402

pytestmark = pytest.mark.book

TOKEN = "lmlib-live-widgets-test"
LIVE_CONTROL = ".lmlib-live-control"  # lmlib.notebook.LIVE_CONTROL_CLASS
# The values of the chapter's live_control(...): the initial one and the one
# two slider steps to the right (labels as the control formats them).
INITIAL_LR, NEW_LR, STEPS_RIGHT = "0.01", "0.1", 2

# Bounded waits, in seconds (generous: the machine may be busy).
SERVER_START_TIMEOUT = 90
KERNEL_READY_TIMEOUT = 120
RUN_ALL_TIMEOUT = 360  # the chapter trains several small models (~40-90 s)
TRAIN_TIMEOUT = 120  # one click of "Train" (200 steps of a tiny model)
SHUTDOWN_TIMEOUT = 20

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# State of the notebook in the page: input prompts of the code cells ("[3]:",
# "[*]:" running or queued, "[ ]:" not run), the kernel's execution status,
# tracebacks shown in the cells' outputs and the number of live controls.
NOTEBOOK_STATE_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim());
  const errors = [...panel.querySelectorAll(
      '.jp-Cell-outputArea .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
    .map(e => e.textContent).filter(t => t.includes('Traceback') || t.includes('Error'));
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  return {prompts, errors, kernel: indicator ? indicator.dataset.status : null,
          controls: panel.querySelectorAll('.lmlib-live-control').length};
}"""


@dataclass
class Lab:
    url: str
    root: Path
    log: Path

    def log_tail(self, chars: int = 6000) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as exc:
            return f"(no server log: {exc})"
        return text[-chars:]


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, method: str = "GET", timeout: float = 5) -> int:
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return response.status


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def _stop(proc: subprocess.Popen, url: str) -> None:
    """Shut the server (and its kernels) down; escalate to SIGTERM, then SIGKILL.

    Kernels run in sessions of their own; a clean shutdown stops them, and
    otherwise they exit by themselves once the server is gone (ipykernel
    watches its parent process).
    """
    if proc.poll() is not None:
        return
    try:  # clean: the server shuts its kernels down, then exits
        _request(f"{url}/api/shutdown", method="POST")
    except (OSError, urllib.error.URLError):
        pass
    for stop in (None, proc.terminate):
        if stop is not None:
            stop()
        try:
            proc.wait(timeout=SHUTDOWN_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            pass
    # Still alive: kill its process group (its own session, started by the fixture).
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=SHUTDOWN_TIMEOUT)


@pytest.fixture
def lab_server(tmp_path: Path) -> Iterator[Lab]:
    """A JupyterLab server on a temporary copy of book/; shut down afterwards."""
    if importlib.util.find_spec("jupyterlab") is None:
        message = "JupyterLab is not installed (pip install -r requirements.txt)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    root = tmp_path / "book"
    shutil.copytree(BOOK, root, ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints", "__pycache__"))
    # Beside it, as in the repository: chapters read committed results from ../experiments.
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    jupyter = tmp_path / "jupyter"
    env = kernel_environment()
    env.update(
        JUPYTER_CONFIG_DIR=str(jupyter / "config"),
        JUPYTER_DATA_DIR=str(jupyter / "data"),
        JUPYTER_RUNTIME_DIR=str(jupyter / "runtime"),
        IPYTHONDIR=str(jupyter / "ipython"),
    )
    for key in ("JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        Path(env[key]).mkdir(parents=True)
    config = Path(env["JUPYTER_CONFIG_DIR"])
    # No "Would you like to get notified about official Jupyter news?" toast.
    _write_json(
        config / "labconfig" / "page_config.json",
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}},
    )
    # Every cell in the DOM, whether or not it is scrolled into view.
    _write_json(
        config / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings",
        {"windowingMode": "none"},
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "lab_server.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root}",
        # Offline: no news feed, no update check, no PyPI extension manager.
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    lab = Lab(url=url, root=root, log=log)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"JupyterLab exited with status {proc.returncode} before answering:\n{lab.log_tail()}",
                    pytrace=False,
                )
            try:
                if _request(f"{url}/api/status", timeout=2) == 200:
                    break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"JupyterLab did not answer on {url} within {SERVER_START_TIMEOUT} s:\n{lab.log_tail()}",
                    pytrace=False,
                )
            time.sleep(0.25)
        yield lab
    finally:
        _stop(proc, url)


def _code_cell_count(path: Path) -> int:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return sum(cell["cell_type"] == "code" for cell in nb["cells"])


def _run_all_cells(page, n_code_cells: int, lab: Lab) -> float:
    """Clear the outputs, run every cell from the Run menu, wait until all ran."""
    from playwright.sync_api import expect

    expect(page.locator(".jp-NotebookPanel .jp-CodeCell")).to_have_count(n_code_cells)
    page.locator(".lm-MenuBar-item", has_text="Edit").click()
    page.locator('.lm-Menu-item[data-command="editmenu:clear-all"]').click()
    state = page.evaluate(NOTEBOOK_STATE_JS)
    assert len(state["prompts"]) == n_code_cells, state
    expect(page.locator(LIVE_CONTROL)).to_have_count(0)  # no stale control from the stored outputs

    page.locator(".lm-MenuBar-item", has_text="Run").click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
    started = time.monotonic()
    deadline = started + RUN_ALL_TIMEOUT
    seen_running = False
    while True:
        state = page.evaluate(NOTEBOOK_STATE_JS) or {"prompts": [], "errors": [], "kernel": None}
        prompts = state["prompts"]
        running = sum(p == "[*]:" for p in prompts)
        done = sum(bool(re.fullmatch(r"\[\d+\]:", p)) for p in prompts)
        seen_running = seen_running or running > 0
        if done == n_code_cells and state["kernel"] == "idle":
            return time.monotonic() - started
        if state["kernel"] == "dead" or (seen_running and running == 0 and state["kernel"] == "idle"):
            # A cell failed (Run All stops there), the run was aborted or the kernel died.
            time.sleep(1)  # let the last outputs arrive
            state = page.evaluate(NOTEBOOK_STATE_JS)
            errors = "\n".join(state["errors"])[-4000:]
            pytest.fail(
                f"running {NOTEBOOK} in JupyterLab failed; prompts {state['prompts']}, errors:\n{errors}",
                pytrace=False,
            )
        if time.monotonic() > deadline:
            pytest.fail(
                f"{NOTEBOOK} did not finish within {RUN_ALL_TIMEOUT} s: {done}/{n_code_cells} cells ran, "
                f"kernel {state['kernel']}, prompts {prompts}, errors {state['errors']}\n"
                f"server log:\n{lab.log_tail(3000)}",
                pytrace=False,
            )
        time.sleep(1)


def _train(control, value: str, previous_png: str | None) -> str:
    """Click "Train"; check the run finished and drew new curves; return the image's src."""
    from playwright.sync_api import expect

    status = control.locator("div.widget-label")  # the status Label (the slider's description is a <label>)
    button = control.get_by_role("button", name="Train")
    image = control.locator(".widget-output img")
    button.click()
    # "done: ..." is set only after run() returned ("failed: ..." if it raised).
    finished = re.compile(rf"^(done: learning rate = {re.escape(value)}|failed: .*)$")
    expect(status).to_have_text(finished, timeout=TRAIN_TIMEOUT * 1000)
    expect(status).to_have_text(f"done: learning rate = {value}", timeout=1000)
    # Re-enabled after the final drawing of the curves.
    expect(button).to_be_enabled(timeout=TRAIN_TIMEOUT * 1000)
    expect(image).to_have_count(1, timeout=10_000)
    if previous_png is not None:
        expect(image).not_to_have_attribute("src", previous_png, timeout=10_000)
    src = image.get_attribute("src")
    assert src and src.startswith("data:image/png;base64,"), (src or "")[:80]
    assert src != previous_png
    assert image.evaluate("img => img.complete && img.naturalWidth > 100 && img.naturalHeight > 100"), (
        "the curves' PNG did not decode"
    )
    return src


def test_live_learning_rate_control_trains_in_jupyterlab(lab_server: Lab, chromium: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    n_code_cells = _code_cell_count(lab_server.root / NOTEBOOK)
    blocked: list[str] = []

    def route(request_route) -> None:  # noqa: ANN001
        url = request_route.request.url
        if url.startswith((lab_server.url + "/", "data:", "blob:")):
            request_route.continue_()
        else:
            blocked.append(url)
            request_route.abort("blockedbyclient")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000}, service_workers="block")
            context.route("**/*", route)
            page = context.new_page()
            page.set_default_timeout(30_000)
            try:
                started = time.monotonic()
                page.goto(f"{lab_server.url}/lab/tree/{NOTEBOOK}?token={TOKEN}")
                # The kernel of the notebook is started and idle.
                expect(page.locator(".jp-StatusBar-TextItem").filter(has_text=re.compile(r"\| Idle$"))).to_have_count(
                    1, timeout=KERNEL_READY_TIMEOUT * 1000
                )
                print(f"JupyterLab loaded, kernel idle: {time.monotonic() - started:.1f} s")
                print(f"Run All Cells: {_run_all_cells(page, n_code_cells, lab_server):.1f} s")

                control = page.locator(LIVE_CONTROL)
                expect(control).to_have_count(1)
                control.scroll_into_view_if_needed()
                readout = control.locator(".widget-readout")
                expect(readout).to_have_text(INITIAL_LR)
                expect(control.locator("div.widget-label")).to_have_text("")
                expect(control.locator(".widget-output img")).to_have_count(0)  # nothing trained yet

                clicked = time.monotonic()
                first = _train(control, INITIAL_LR, previous_png=None)

                handle = control.locator(".noUi-handle")
                handle.focus()
                for _ in range(STEPS_RIGHT):
                    handle.press("ArrowRight")
                expect(readout).to_have_text(NEW_LR)

                _train(control, NEW_LR, previous_png=first)
                print(f"two trainings from the control: {time.monotonic() - clicked:.1f} s")
            except BaseException:
                shot = tmp_path / "jupyterlab.png"
                try:
                    page.screenshot(path=str(shot), full_page=False, timeout=10_000)
                    print(f"screenshot: {shot}")
                except Exception as exc:  # the screenshot must not hide the failure
                    print(f"no screenshot: {exc}")
                print(f"JupyterLab log ({lab_server.log}):\n{lab_server.log_tail()}")
                if blocked:
                    print("blocked requests to the outside:\n" + "\n".join(blocked))
                raise
        finally:
            browser.close()
    if blocked:
        warnings.warn("JupyterLab tried to reach the outside (blocked): " + ", ".join(blocked), stacklevel=1)
