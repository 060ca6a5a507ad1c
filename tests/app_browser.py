"""Drive `curatune app` in headless Chromium: start it, open every page, wait, screenshot.

Used by tests/test_app_browser.py, and to refresh the documentation screenshots::

    python tests/app_browser.py RUN_DIR [COMPARE_RUN_DIR] --out docs/screenshots
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER_NAMES = ("chromedriver",)
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
)


@dataclass(frozen=True)
class Page:
    slug: str            # URL path of the page (st.Page default: the file name)
    title: str
    ready_css: str       # the page's last element: the page is drawn once this is present
    ready_count: int = 1


PAGES = (
    Page("", "Runs", "[data-testid='stTabs'], [data-testid='stCode']"),
    Page("curation", "Curation", ".ct-diff"),
    Page("audit", "Audit", "[data-testid='stDataFrame']"),
    Page("saturation", "Saturation", ".js-plotly-plot .scatterlayer .trace"),
    Page("learning", "Learning vs forgetting", ".js-plotly-plot .heatmaplayer image, .js-plotly-plot .hm image", 1),
    Page("samples", "Samples", ".ct-diff", 4),
)


def find_browser() -> tuple[str | None, str | None]:
    chromium = next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)
    driver = next((shutil.which(n) for n in CHROMEDRIVER_NAMES if shutil.which(n)), None)
    return chromium, driver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_app(run_dirs: list[Path], port: int, log_path: Path):
    """`curatune app` as a user starts it; yields the URL once the server answers."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "curatune.cli", "app", *map(str, run_dirs), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"curatune app exited with {process.returncode}: {log_path.read_text()}")
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"curatune app did not answer on {url} within 60 s: {log_path.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@contextmanager
def chromium_driver(chromium: str, chromedriver: str, width: int = 1440, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="curatune-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_rendered(driver, page: Page, timeout: float = 60) -> None:
    """Wait for the page's last element and for Streamlit to finish the script run."""
    from selenium.webdriver.common.by import By

    deadline = time.time() + timeout
    while time.time() < deadline:
        found = driver.find_elements(By.CSS_SELECTOR, page.ready_css)
        running = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stStatusWidget'] *")
        titles = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "h1")]
        if len(found) >= page.ready_count and not running and page.title in titles:
            time.sleep(1.0)  # plotly transitions and fonts settle
            return
        time.sleep(0.25)
    raise TimeoutError(f"page {page.slug!r} did not render {page.ready_css!r} within {timeout:.0f} s")


def page_problems(driver) -> list[str]:
    """Error boxes and tracebacks the page shows (there should be none)."""
    from selenium.webdriver.common.by import By

    problems = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stException']")]
    problems += [e.text for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stAlertContentError']")]
    return problems


def screenshot(driver, path: Path, width: int = 1440, max_height: int = 4200) -> None:
    """Resize to the page's full content height, then capture it."""
    height = driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]') || document.body;"
        "const b = document.querySelector('[data-testid=\"stMainBlockContainer\"]');"
        "return Math.max(m.scrollHeight, b ? b.scrollHeight + 120 : 0);"
    )
    driver.set_window_size(width, min(max_height, max(900, int(height) + 40)))
    time.sleep(0.8)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))


def capture_pages(driver, url: str, out_dir: Path, *, prefix: str = "", query: str = "",
                  pages: tuple[Page, ...] = PAGES) -> dict[str, Path]:
    """Open each page (``query`` e.g. "run=a&compare=b"), wait for it, screenshot it."""
    shots = {}
    for page in pages:
        driver.set_window_size(1440, 1000)
        driver.get(f"{url}/{page.slug}" + (f"?{query}" if query else ""))
        wait_rendered(driver, page)
        problems = page_problems(driver)
        if problems:
            raise AssertionError(f"page {page.slug} shows errors: {problems}")
        name = page.slug or "runs"
        shots[name] = out_dir / f"{prefix}{name}.png"
        screenshot(driver, shots[name])
    return shots


def shrink_png(path: Path) -> None:
    """256-colour palette PNG: a third of the size, indistinguishable for a UI screenshot."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("test-artifacts/app"))
    parser.add_argument("--run", help="Label of the run to show (default: the first)")
    parser.add_argument("--compare", help="Label of a run to compare with: adds compare-*.png screenshots")
    args = parser.parse_args()
    chromium, driver_path = find_browser()
    if not chromium or not driver_path:
        sys.exit("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    log = Path(tempfile.mkdtemp(prefix="curatune-app-log-")) / "app.log"
    with running_app(args.run_dirs, free_port(), log) as url:
        with chromium_driver(chromium, driver_path) as driver:
            query = f"run={args.run}" if args.run else ""
            shots = capture_pages(driver, url, args.out, query=query)
            if args.compare:
                both = "&".join(q for q in (query, f"compare={args.compare}") if q)
                compared = tuple(p for p in PAGES if p.slug in ("saturation", "learning"))
                shots.update({f"compare-{k}": v for k, v in capture_pages(
                    driver, url, args.out, prefix="compare-", query=both, pages=compared).items()})
            for name, path in shots.items():
                shrink_png(path)
                print(f"{name}: {path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
