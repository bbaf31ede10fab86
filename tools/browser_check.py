"""Real-browser check: run notebooks top to bottom in JupyterLab in headless Chromium.

For each notebook: copy it into a scratch folder (JupyterLab autosaves; the repository's copy is never
touched), start JupyterLab on 127.0.0.1 with a random free port and a random token, open the copy in
Debian's Chromium through Playwright, choose Run → Run All Cells, wait until the kernel is idle and
every code cell has run, save, and read the saved notebook back. The check fails when a cell shows
an error, when a cell's output went to stderr, or when fewer figures appear than the committed
notebook holds (its stored ci outputs say how many images each cell shows). A screenshot of the last
figure goes to ``build/browser_check/<notebook>.png``.

Usage: ``python tools/browser_check.py [NOTEBOOK ... | --all] [--skip-missing] [--timeout S] [--keep]``
(default: 01_lq_geometry); ``make test`` runs ``--all --skip-missing``;
``make browser-check``. Needs the ``playwright`` pip package (the dev extra) and ``/usr/bin/chromium``
(``apt-get install chromium``); Playwright's own browser download (``playwright install``) is never
used. Exit code 0: all passed; 1: a check failed; 2: chromium, playwright or jupyterlab is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("LQTHEORY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DEFAULT_NOTEBOOKS = ("01_lq_geometry",)
MISSING = 2
RUN_ALL = re.compile(r"^\s*Run All Cells\s*$")


def missing_requirements() -> str | None:
    """Why the check cannot run here (None when it can)."""
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} not found (Debian: apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright pip package is missing (pip install -e '.[dev]')"
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "jupyterlab is missing (pip install -e '.[dev]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own local server
        return json.loads(response.read().decode())


def _write_settings(settings: Path) -> None:
    """JupyterLab user settings: render every cell (no windowing), no news or update pop-ups."""
    files = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                             "checkForUpdates": False},
    }
    for rel, content in files.items():
        path = settings / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))


class Lab:
    """A JupyterLab server on 127.0.0.1 with a random port and token, serving ``root``."""

    def __init__(self, root: Path, scratch: Path, env: dict[str, str]):
        self.port, self.token = free_port(), secrets.token_hex(16)
        settings = scratch / "settings"
        _write_settings(settings)
        self.log = open(scratch / "jupyterlab.log", "w")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
               f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={scratch / 'workspaces'}",
               "--ServerApp.open_browser=False"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI often run as root
            cmd.append("--allow-root")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=root)
        self.base = f"http://127.0.0.1:{self.port}"

    def api(self, path: str):
        return _get(f"{self.base}{path}?token={self.token}")

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {self.proc.returncode}; see {self.log.name}")
            try:
                self.api("/api/status")
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f}s; see {self.log.name}")

    def kernel_states(self) -> list[str]:
        return [k.get("execution_state", "") for k in self.api("/api/kernels")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def write_unexecuted(source: Path, target: Path) -> None:
    """``source`` without outputs or execution counts, so every prompt shows when its cell has run."""
    import nbformat

    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, target)


def expected_figures(path: Path) -> dict[int, int]:
    """Images per code cell in the committed notebook's stored outputs (index of the cell -> count)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return {i: n for i, c in enumerate(nb.cells) if c.cell_type == "code"
            if (n := sum(any(k.startswith("image/") for k in o.get("data", {})) for o in c.get("outputs", [])))}


def inspect_saved(path: Path, expected: dict[int, int]) -> list[str]:
    """Problems in the notebook as the browser saved it: errors, stderr, unrun cells, missing figures."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        if cell.get("execution_count") is None:
            problems.append(f"cell {i + 1} did not run")
        images = 0
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "error":
                problems.append(f"cell {i + 1} raised {out.get('ename')}: {out.get('evalue')}")
            elif kind == "stream" and out.get("name") == "stderr":
                first = "".join(out.get("text", "")).strip().splitlines()[:1]
                problems.append(f"cell {i + 1} wrote to stderr: {first[0] if first else ''}")
            images += int(any(k.startswith("image/") for k in out.get("data", {})))
        if images < expected.get(i, 0):
            problems.append(f"cell {i + 1} shows {images} figure(s), the committed notebook {expected[i]}")
    return problems


def _code_sources(path: Path) -> list[str]:
    import nbformat

    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def run_all_cells(page, debug_shot: Path) -> None:
    """Run → Run All Cells from the menu bar; the command palette if the menu does not offer it."""
    page.keyboard.press("Escape")  # close a pop-up (kernel or news dialog) that would take the click
    page.locator(".jp-Notebook:visible").first.click()  # the open notebook, never a hidden tab
    try:
        page.locator("li.lm-MenuBar-item", has_text="Run").first.click(timeout=15_000)
        page.locator("li.lm-Menu-item", has=page.locator(".lm-Menu-itemLabel", has_text=RUN_ALL)).first.click(
            timeout=15_000)
        return
    except Exception:  # noqa: BLE001 - fall back to the palette, then report with a screenshot
        page.screenshot(path=str(debug_shot))
        page.keyboard.press("Escape")
    page.keyboard.press("Control+Shift+c")
    page.locator(".lm-CommandPalette input").fill("Run All Cells")
    page.locator(".lm-CommandPalette-item", has_text=RUN_ALL).first.click(timeout=15_000)


def check_notebook(page, lab: Lab, name: str, copy: Path, expected: dict[int, int], shots: Path,
                   timeout: float) -> list[str]:
    """Open ``copy`` in JupyterLab, run all cells, save; the problems found (empty: passed)."""
    # a workspace of its own, reset: JupyterLab would otherwise reopen the previous notebook as a tab
    page.goto(f"{lab.base}/lab/workspaces/{name}/tree/{copy.name}?reset&token={lab.token}")
    page.wait_for_selector(".jp-Notebook:visible .jp-Cell", timeout=120_000)
    # the kernel must be up before Run All, or the first cells queue behind its start-up
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and lab.kernel_states() != ["idle"]:
        time.sleep(0.5)
    run_all_cells(page, shots / f"{name}-menu.png")
    started = time.monotonic()
    n_code = sum(1 for c in _code_sources(copy) if c.strip())
    idle_since = None
    while True:
        if time.monotonic() - started > timeout:
            return [f"did not finish within {timeout:.0f}s"]
        prompts = page.locator(".jp-Notebook:visible .jp-CodeCell .jp-InputPrompt").all_inner_texts()
        running = sum("*" in p for p in prompts)
        done = sum(any(ch.isdigit() for ch in p) for p in prompts)
        idle = lab.kernel_states() == ["idle"] and running == 0
        if idle and done >= n_code:
            break
        if idle and done:  # stopped early (an error stops Run All): idle for a few seconds means done
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 10.0:
                break
        else:
            idle_since = None
        time.sleep(1.0)
    before = copy.stat().st_mtime_ns
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while copy.stat().st_mtime_ns == before and time.monotonic() < deadline:
        time.sleep(0.3)
    images = page.locator(".jp-Notebook:visible .jp-OutputArea-output img")
    if images.count():
        images.last.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / f"{name}.png"))
    if copy.stat().st_mtime_ns == before:
        return ["the notebook was not saved after running (Ctrl+S had no effect)"]
    problems = inspect_saved(copy, expected)
    shown = images.count()
    if shown < sum(expected.values()):
        problems.append(f"{shown} figure(s) on the page, the committed notebook has {sum(expected.values())}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", default=None,
                        help="notebook names in notebooks/ (default: 01_lq_geometry)")
    parser.add_argument("--all", action="store_true", help="every notebook in notebooks/ (as `make test` does)")
    parser.add_argument("--skip-missing", action="store_true",
                        help="exit 0, saying why, when chromium, playwright or jupyterlab is missing")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per notebook (default 600)")
    parser.add_argument("--shots", type=Path, default=REPO / "build" / "browser_check",
                        help="screenshot folder (default build/browser_check)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (executed copies, server log)")
    args = parser.parse_args(argv)
    why = missing_requirements()
    if why:
        print(f"browser check {'skipped' if args.skip_missing else 'not run'}: {why}", file=sys.stderr)
        return 0 if args.skip_missing else MISSING
    from playwright.sync_api import sync_playwright

    if args.all and args.notebooks:
        parser.error("name notebooks or give --all, not both")
    names = ([p.stem for p in sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))] if args.all
             else args.notebooks or list(DEFAULT_NOTEBOOKS))
    sources = []
    for name in names:
        path = REPO / "notebooks" / f"{Path(name).name.removesuffix('.ipynb')}.ipynb"
        if not path.is_file():
            parser.error(f"no notebook {path}")
        sources.append(path)
    args.shots.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="lqtheory-browser-"))
    root = scratch / "notebooks"
    root.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["LQTHEORY_FIGURES"] = str(scratch / "figures")  # the repository's figures/ stay untouched
    env.setdefault("LQTHEORY_PROGRESS", "0")
    for key in ("LQTHEORY_BATCH", "PYTEST_CURRENT_TEST", "CI"):  # an interactive session, as a user has
        env.pop(key, None)
    lab = Lab(root, scratch, env)
    failures, total = 0, len(sources)
    t0 = time.monotonic()
    try:
        try:
            lab.wait_ready()
        except RuntimeError as err:
            print(f"browser check: JupyterLab did not start: {err}", flush=True)
            failures = len(sources)
            sources = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for source in sources:
                    copy = root / source.name
                    write_unexecuted(source, copy)
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    start = time.monotonic()
                    try:
                        problems = check_notebook(page, lab, source.stem, copy, expected_figures(source),
                                                  args.shots, args.timeout)
                    except Exception as err:  # noqa: BLE001 - a Playwright timeout is this notebook's failure
                        first = (str(err).strip().splitlines() or [""])[0]
                        problems = [f"the browser check itself failed: {type(err).__name__}: {first}"]
                        with contextlib.suppress(Exception):
                            page.screenshot(path=str(args.shots / f"{source.stem}-error.png"))
                    page.close()
                    with contextlib.suppress(OSError):  # one kernel per notebook: shut it down
                        for kernel in lab.api("/api/kernels"):
                            req = urllib.request.Request(
                                f"{lab.base}/api/kernels/{kernel['id']}?token={lab.token}", method="DELETE")
                            urllib.request.urlopen(req, timeout=10).close()  # noqa: S310
                    verdict = "ok" if not problems else "FAILED"
                    print(f"{source.stem}: {verdict} in {time.monotonic() - start:.0f}s "
                          f"(screenshot {args.shots / (source.stem + '.png')})", flush=True)
                    for p in problems:
                        print(f"  - {p}", flush=True)
                    failures += bool(problems)
            finally:
                browser.close()
    finally:
        lab.stop()
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"scratch folder kept: {scratch}")
    print(f"browser check: {total - failures}/{total} notebook(s) passed in "
          f"{time.monotonic() - t0:.0f}s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
