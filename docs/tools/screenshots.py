"""Screenshots of the built site (headless Chromium through selenium, dev-only: `pip install selenium`,
`apt-get install chromium chromium-driver`): builds the site, serves it on a free local port, and writes one PNG
per page into docs/assets/screenshots/.

    .venv/bin/python docs/tools/screenshots.py [page ...]    # default: getting-started configuration
"""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from selenium import webdriver

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "assets" / "screenshots"
WIDTH, MAX_HEIGHT = 1280, 4000  # tall enough for a page's opening sections, small enough to read


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


def chromium(user_data_dir: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={user_data_dir}", f"--window-size={WIDTH},1000"):
        options.add_argument(flag)
    # The system's browser and driver: without them selenium's manager goes online to fetch its own.
    options.binary_location = shutil.which("chromium")
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))


def main(pages: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT, check=True)
        handler = functools.partial(QuietHandler, directory=str(site))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        driver = chromium(str(Path(tmp) / "chromium-profile"))
        try:
            OUT.mkdir(parents=True, exist_ok=True)
            for page in pages:
                driver.get(f"http://127.0.0.1:{server.server_port}/{page}/")
                height = min(driver.execute_script("return document.documentElement.scrollHeight"), MAX_HEIGHT)
                driver.set_window_size(WIDTH, height)
                path = OUT / f"{page}.png"
                driver.save_screenshot(str(path))
                print(path.relative_to(ROOT))
        finally:
            driver.quit()
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["getting-started", "configuration"]))
