"""The report opened in a real browser, offline: what a reader sees, checked and photographed.

:func:`inspect_report` opens a built report in Debian's Chromium through Playwright at a 1,280 px wide
window with every request that would leave the machine aborted (anything but ``file:``, ``data:``,
``blob:`` and localhost), and returns what it found: the requests it blocked, visible text with a raw
``$`` (math that was not typeset), elements wider than the text column, images that did not load,
figure numbers that are not unique, consecutive and linked, in-document links without a target, and
formulas that rendered with no size. With ``screenshots`` it saves the top of the report, the ledger
and the sections asked for.

``python -m lqtheory.workbench.manuscript.browser REPORT [--shots DIR] [--section STEM ...]`` prints
the findings (exit 1 when there is a problem, 2 when Chromium or Playwright is missing). Needs the
``playwright`` pip package (dev extra) and ``/usr/bin/chromium``; ``playwright install`` is never used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

CHROMIUM = os.environ.get("LQTHEORY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WINDOW = {"width": 1280, "height": 900}
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
LOCAL_HOSTS = ("http://127.0.0.1", "http://localhost", "https://127.0.0.1", "https://localhost")

# Runs in the page: every check that needs layout. Tolerance of 1 px for sub-pixel rounding.
_CHECKS_JS = r"""
() => {
  const main = document.querySelector('main');
  const style = getComputedStyle(main);
  const box = main.getBoundingClientRect();
  const left = box.left + parseFloat(style.paddingLeft), right = box.right - parseFloat(style.paddingRight);
  const describe = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
      (el.className && typeof el.className === 'string' ? '.' + el.className.split(' ').join('.') : '');
  const wide = [];
  for (const el of main.querySelectorAll('*')) {
    if (!el.checkVisibility()) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (r.right > right + 1 || r.left < left - 1) {
      wide.push({element: describe(el), width: Math.round(r.width), column: Math.round(right - left),
                 text: (el.textContent || '').trim().slice(0, 80)});
    }
  }
  const dollars = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.textContent.includes('$')) continue;
    const parent = node.parentElement;
    if (parent.closest('code, pre, script, style')) continue;
    if (!parent.checkVisibility()) continue;
    dollars.push(node.textContent.trim().slice(0, 120));
  }
  const images = [...document.images].map(img => ({src: img.src.slice(0, 40), alt: img.alt,
      loaded: img.complete && img.naturalWidth > 0, visible: img.checkVisibility() &&
      img.getBoundingClientRect().width > 0}));
  const figures = [...document.querySelectorAll('figure.figure')].map(f => ({id: f.id,
      label: (f.querySelector('figcaption .fignum') || {}).textContent || '',
      link: (f.querySelector('figcaption a.fignum') || {}).getAttribute ?
            f.querySelector('figcaption a.fignum').getAttribute('href') : null}));
  const broken = [...document.querySelectorAll('a[href^="#"]')].map(a => a.getAttribute('href'))
      .filter(h => h.length > 1 && !document.getElementById(decodeURIComponent(h.slice(1))));
  const figrefs = [...document.querySelectorAll('a.figref')].map(a => a.getAttribute('href'));
  const maths = [...document.querySelectorAll('math')];
  const flat = maths.filter(m => m.checkVisibility() && m.getBoundingClientRect().width === 0).length;
  return {wide, dollars, images, figures, broken, figrefs, math: maths.length, flat_math: flat,
          column: Math.round(right - left)};
}
"""


def missing_requirements() -> str | None:
    """Why the browser check cannot run here (None when it can)."""
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} not found (Debian: apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright pip package is missing (pip install -e '.[dev]')"
    return None


def _is_local(url: str) -> bool:
    return url.startswith(LOCAL_SCHEMES) or url.startswith(LOCAL_HOSTS)


def figure_problems(figures: list[dict]) -> list[str]:
    """Figure numbers must be unique, run 1, 2, 3, … and each caption must link its own anchor."""
    problems = []
    ids = [f["id"] for f in figures]
    if len(set(ids)) != len(ids):
        problems.append(f"duplicate figure anchors: {sorted({i for i in ids if ids.count(i) > 1})}")
    for k, f in enumerate(figures, start=1):
        if f["id"] != f"figure-{k}" or f["label"].strip() != f"Figure {k}.":
            problems.append(f"figure {k} is numbered {f['label']!r} with anchor {f['id']!r}")
        if f["link"] != f"#{f['id']}":
            problems.append(f"figure {f['id']}: its number links {f['link']!r}")
    return problems


def inspect_report(report: str | os.PathLike, *, screenshots: str | os.PathLike | None = None,
                   sections: tuple[str, ...] = ()) -> dict:
    """Open ``report`` offline at a 1,280 px window; return the findings (see the module docstring).

    ``problems`` lists every failed check in one line each; it is empty when the report passes.
    """
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []
    url = Path(report).resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=WINDOW)

            def route(r):
                if _is_local(r.request.url):
                    r.continue_()
                else:
                    blocked.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.goto(url, wait_until="load")
            page.wait_for_function("[...document.images].every(i => i.complete)")
            found = page.evaluate(_CHECKS_JS)
            if screenshots is not None:
                shots = Path(screenshots)
                shots.mkdir(parents=True, exist_ok=True)
                found["screenshots"] = _screenshots(page, shots, sections)
        finally:
            browser.close()
    found["blocked"] = blocked
    problems = [f"request left the machine: {u}" for u in blocked]
    problems += [f"raw $ in rendered text: {t!r}" for t in found["dollars"]]
    problems += [f"{w['element']} is {w['width']} px wide, the column {w['column']} px: {w['text']!r}"
                 for w in found["wide"]]
    problems += [f"image not shown: {i['alt'][:60]!r}" for i in found["images"] if not (i["loaded"] and i["visible"])]
    problems += [f"image without meaningful alt text: {i['src']}" for i in found["images"]
                 if len(i["alt"].strip()) < 12 or i["alt"].strip().lower() == "figure"]
    problems += figure_problems(found["figures"])
    problems += [f"link to a missing anchor: {h}" for h in found["broken"]]
    problems += [f"{found['flat_math']} formula(s) rendered with no width"] if found["flat_math"] else []
    found["problems"] = problems
    return found


def _screenshots(page, folder: Path, sections: tuple[str, ...]) -> list[str]:
    saved = []

    def shot(name: str) -> None:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path))
        saved.append(str(path))

    page.evaluate("window.scrollTo(0, 0)")
    shot("top")
    for anchor, name in [("claims-ledger", "ledger")] + [(f"section-{s}", f"section-{s}") for s in sections]:
        top = page.evaluate(f"document.getElementById({json.dumps(anchor)}).getBoundingClientRect().top + scrollY")
        height = page.evaluate(f"document.getElementById({json.dumps(anchor)}).getBoundingClientRect().height")
        for k in range(max(1, min(6, int(height // WINDOW["height"]) + 1))):
            page.evaluate(f"window.scrollTo(0, {top + k * (WINDOW['height'] - 60)})")
            shot(f"{name}-{k + 1}")
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lqtheory.workbench.manuscript.browser",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--shots", type=Path, default=None, help="folder for screenshots")
    parser.add_argument("--section", action="append", default=[], help="notebook stem to photograph")
    args = parser.parse_args(argv)
    why = missing_requirements()
    if why:
        print(f"browser check: {why}", file=sys.stderr)
        return 2
    if not args.report.is_file():
        print(f"browser check: error: {args.report} does not exist", file=sys.stderr)
        return 2
    found = inspect_report(args.report, screenshots=args.shots, sections=tuple(args.section))
    print(f"{len(found['figures'])} figures, {len(found['images'])} images, {found['math']} formulas, "
          f"column {found['column']} px; {len(found['problems'])} problem(s)")
    for line in found["problems"]:
        print(f"  {line}")
    for path in found.get("screenshots", []):
        print(f"screenshot: {path}")
    return 1 if found["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
