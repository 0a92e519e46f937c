"""The web explorer (serving/explorer/) in headless Chromium: the README's screenshot, and the page object
that tests/test_explorer.py drives.

  make screenshots   # against a running service (make serve + make service): writes docs/explorer.png
  python -m serving.screenshots --url http://127.0.0.1:8080/ --out docs/explorer.png [--user ID]
      [--xquad_steps 6]

Chromium and its driver are Debian's `chromium` and `chromium-driver` (scripts/env installs them into its
root); as root Chromium runs only with --no-sandbox. Selenium is pointed at that driver, so it never tries to
download one (the machines are offline).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass

from serving.config import DEFAULT_HOST
from serving.service_config import SERVICE_PORT
from trainer import features

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = "chromedriver"
CHROME_ARGUMENTS = ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage")
WINDOW = (1400, 1000)
DEFAULT_OUT = os.path.join("docs", "explorer.png")
DEFAULT_REPORT_OUT = os.path.join("docs", "report.png")
REPORT_HEIGHT = 1900


def browser_missing() -> str | None:
    """Why no headless browser can run here (None when Chromium and chromedriver are on PATH)."""
    missing = []
    if not any(shutil.which(name) for name in CHROMIUM_NAMES):
        missing.append("chromium")
    if not shutil.which(CHROMEDRIVER):
        missing.append("chromium-driver (chromedriver)")
    if not missing:
        return None
    return f"{' and '.join(missing)} not on PATH: scripts/env installs them; elsewhere apt-get install them"


def headless_chrome(window: tuple[int, int] = WINDOW):
    """Headless Chromium through Debian's chromedriver, keeping the page's console for `js_errors`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(filter(None, map(shutil.which, CHROMIUM_NAMES)))
    for argument in CHROME_ARGUMENTS:
        options.add_argument(argument)
    if os.geteuid() == 0:  # Chromium refuses to start its sandbox as root
        options.add_argument("--no-sandbox")
    options.add_argument(f"--window-size={window[0]},{window[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=shutil.which(CHROMEDRIVER)), options=options)


@dataclass
class ExplorerPage:
    """The explorer's page as a person uses it: pick a user, move a slider, switch the rules."""

    driver: object  # selenium.webdriver.Chrome
    url: str
    timeout_s: float = 20.0

    def wait(self, condition, timeout_s: float | None = None):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout_s or self.timeout_s).until(lambda _: condition())

    def find(self, element_id: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, element_id)

    def open(self, timeout_s: float | None = None) -> None:
        """Loads the page and waits until its script has run (it marks the body)."""
        self.driver.get(self.url)
        self.wait(lambda: self.driver.find_element("tag name", "body").get_attribute("data-ready"), timeout_s)

    def dataset_users(self) -> list[str]:
        """The user ids of the "from the run's dataset" list, once the service answered /v1/users."""
        self.wait(lambda: self.find("users-source").text)
        return [o.get_attribute("value") for o in self.find("user-pick").find_elements("tag name", "option")][
            1:
        ]

    def shown(self) -> tuple[str, list[str]]:
        """(the list's summary line, the recommended item ids in order)."""
        items = self.find("recommendations").find_elements("tag name", "li")
        return self.find("list-summary").text, [li.get_attribute("data-item-id") for li in items]

    def items(self) -> list[dict[str, object]]:
        """The recommendations shown: item_id, title, score (as shown), badges, reason (its text)."""
        shown = []
        for li in self.find("recommendations").find_elements("tag name", "li"):

            def texts(selector: str, li=li) -> list[str]:
                return [e.text for e in li.find_elements("css selector", selector)]

            shown.append(
                {
                    features.ITEM_ID: li.get_attribute("data-item-id"),
                    features.TITLE: texts(".title")[0],
                    features.SCORE: texts(".score")[0],
                    "badges": texts(".badge"),
                    features.REASON: (texts(".reason") or [""])[0],
                }
            )
        return shown

    def answered(self) -> tuple[int, bool]:
        """(recommendation calls the page has had answered, whether one is due or in flight)."""
        body = self.driver.find_element("tag name", "body")
        return int(body.get_attribute("data-answers") or 0), body.get_attribute("data-busy") == "true"

    def after(self, action, timeout_s: float | None = None) -> tuple[str, list[str]]:
        """Runs `action`, waits until the page has the answer of the call it made (and none is due); returns
        the list shown then."""
        before = self.answered()[0]
        action()

        def answered_since() -> bool:
            count, busy = self.answered()
            return count > before and not busy

        self.wait(answered_since, timeout_s)
        return self.shown()

    def pick_user(self, user_id: str) -> tuple[str, list[str]]:
        from selenium.webdriver.support.ui import Select

        return self.after(lambda: Select(self.find("user-pick")).select_by_value(user_id))

    def move_slider(self, knob: str, keys: str) -> None:
        """Moves a knob's slider with the keyboard (each arrow key is one 0.05 step), as a person would."""
        self.find(knob).send_keys(keys)

    def toggle_rules(self) -> None:
        self.find("rules").click()

    def exposure(self) -> dict[str, str]:
        """The live-exposure panel's rows, name → shown value."""
        panel = self.find("exposure")
        names = [e.text for e in panel.find_elements("tag name", "dt")]
        return dict(zip(names, [e.text for e in panel.find_elements("tag name", "dd")], strict=True))

    def js_errors(self) -> list[str]:
        """Console errors from the page's script since the last call (failed HTTP calls excluded: a test may
        provoke an error answer on purpose)."""
        entries = self.driver.get_log("browser")
        return [e["message"] for e in entries if e["level"] == "SEVERE" and e.get("source") != "network"]


def main(argv: list[str] | None = None) -> None:
    from selenium.webdriver.common.keys import Keys

    parser = argparse.ArgumentParser(
        prog="python -m serving.screenshots", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--url", default=f"http://{DEFAULT_HOST}:{SERVICE_PORT}/", help="the running service")
    parser.add_argument("--out", default=DEFAULT_OUT, help="the PNG to write")
    parser.add_argument("--user", default="", help="user id to show (default: the first dataset user)")
    parser.add_argument("--xquad_steps", type=int, default=6, help="0.05 steps of the xquad_lambda slider")
    parser.add_argument("--report", default="", help="also `make report`'s index.html → --report_out")
    parser.add_argument("--report_out", default=DEFAULT_REPORT_OUT)
    args = parser.parse_args(argv)
    missing = browser_missing()
    if missing:
        parser.error(missing)
    try:  # a clear message before a browser waits on an error page
        urllib.request.urlopen(urllib.parse.urljoin(args.url, "healthz"), timeout=10).close()
    except OSError as e:
        parser.error(f"no service at {args.url} ({e}): start it first (make serve + make service)")
    driver = headless_chrome()
    try:
        page = ExplorerPage(driver, args.url)
        page.open()
        users = page.dataset_users()
        user = args.user or (users[0] if users else "")
        if not user:
            parser.error("the service lists no dataset users: pass --user")
        if user in users:
            page.pick_user(user)
        else:  # any id: typed, as a person would
            page.after(lambda: page.find("user-id").send_keys(user, Keys.ENTER))
        if args.xquad_steps:
            page.after(lambda: page.move_slider(features.XQUAD_LAMBDA, Keys.ARROW_RIGHT * args.xquad_steps))
        page.wait(lambda: page.exposure())
        full_page_screenshot(driver, args.out)
        errors = page.js_errors()
        if errors:
            raise SystemExit(f"the page logged errors: {errors}")
        print(f"wrote {args.out} ({user}, xquad_lambda {args.xquad_steps * 0.05:g})")
        if args.report:
            report_screenshot(driver, args.report, args.report_out)
    finally:
        driver.quit()


def full_page_screenshot(driver, out: str) -> None:
    """The whole page: a headless window cannot grow past its screen, an emulated viewport can."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    metrics = {"width": WINDOW[0], "height": max(WINDOW[1], height), "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    driver.save_screenshot(out)


def report_screenshot(driver, report_html: str, out: str) -> None:
    """The merchant exposure report (`make report`'s index.html, a local file) as a PNG."""
    if not os.path.isfile(report_html):
        print(f"no report at {report_html}: run make report first (skipped {out})")
        return
    # Its top: the summary and the first plots (the whole page, with its tables, is several screens long).
    metrics = {"width": WINDOW[0], "height": REPORT_HEIGHT, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    driver.get(pathlib.Path(os.path.abspath(report_html)).as_uri())
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    driver.save_screenshot(out)
    print(f"wrote {out} ({report_html})")


if __name__ == "__main__":
    main()
