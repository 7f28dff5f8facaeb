"""Make the README's screenshot of ``batchpod report --format html``, from a real run.

Runs a 30-job manifest against the sandbox (Basic plan, so that one ``producer`` job is
refused; a fifth of the rest fail at AudioPod; jobs take 2 to 12 s, 8 at a time, so that
most of them wait their turn), renders its results as HTML and photographs the page in
headless Chromium (tests/chromium.py) at 1100 CSS pixels wide:

    python scripts/report_screenshot.py docs/report.png    # about a minute
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from chromium import browser, chromium_path  # noqa: E402

from batchpod.cli import main  # noqa: E402
from batchpod.sandbox import SandboxSettings, SandboxThread  # noqa: E402

SONGS = [
    "harbour-lights", "paper-moon", "late-train", "blue-hour", "salt-and-smoke", "northbound",
    "glasshouse", "low-tide", "copper-sky", "after-hours", "wildflower", "slow-burn",
    "quiet-storm", "open-road", "ember", "tin-roof", "static-bloom", "long-way-home",
    "first-light", "night-market", "silver-line", "undertow", "daydream", "backstreet",
    "riverbend", "neon-rain", "last-call", "hollow-pines", "tidewater",
]  # fmt: skip


def main_(output: Path) -> int:
    if chromium_path() is None:
        print("Debian's chromium is not installed (apt-get install -y chromium)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="batchpod-shot-") as folder:
        manifest = Path(folder) / "catalogue.yaml"
        lines = [
            f"  - {{url: 'https://media.example.com/{song}.mp3?duration={120 + 17 * n}', "
            f"name: {song}}}"
            for n, song in enumerate(SONGS)
        ]
        lines.insert(7, "  - {url: 'https://media.example.com/live-set.mp3', mode: producer, "
                        "name: live-set}")  # fmt: skip
        manifest.write_text(
            "version: 1\nconcurrency: 8\nbudget: {max_spend_usd: 12}\n"
            "defaults: {mode: four}\njobs:\n" + "\n".join(lines) + "\n",
            encoding="utf-8",
        )
        settings = SandboxSettings(processing_s=(2.0, 12.0), plan="basic", failure_rate=0.2, seed=3)
        with SandboxThread(settings) as sb:
            os.environ["AUDIOPOD_API_KEY"] = sb.api_key
            code = main(["run", str(manifest), "--base-url", sb.base_url, "--quiet"])
        print(f"run: exit {code}", file=sys.stderr)
        page = Path(folder) / "report.html"
        results = manifest.with_name("catalogue.results.yaml")
        main(["report", str(results), "--format", "html", "-o", str(page)], stdout=io.StringIO())
        with browser() as chrome:
            visit = chrome.visit(page)
        if visit.errors or len(visit.requests) != 1:
            print(f"the page was not clean: {visit.errors} {visit.requests}", file=sys.stderr)
            return 1
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(visit.screenshot)
    print(f"screenshot: {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="where the PNG goes")
    sys.exit(main_(parser.parse_args().output))
