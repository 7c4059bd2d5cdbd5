"""Screenshot quality: the report pages render in headless Chromium (Debian's `chromium` package)
without console errors, at full size, with the invoice's numbers in the rendered DOM."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import polars as pl
import pytest

from catalog import Lake
from flows.stages.report import render_invoice, render_period
from tests.exploration.htmlpage import amount

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and Path(p).is_file()), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: `apt-get install -y chromium`; .ci/run installs it)")

WIDTH, HEIGHT = 1000, 1400
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", f"--window-size={WIDTH},{HEIGHT}"]
# what Chromium logs for the page's console (messages, uncaught exceptions) and failed loads
CONSOLE = re.compile(r"CONSOLE|Uncaught|Failed to load resource|net::ERR_", re.I)


def start(page: Path, work: Path) -> tuple[subprocess.Popen, Path]:
    """Chromium on one page: a screenshot, the DOM after load on stdout, its log on stderr."""
    png = work / f"{page.stem}.png"
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={work / ('profile-' + page.stem)}", f"--screenshot={png}",
           "--dump-dom", page.resolve().as_uri()]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), png


def png_size(png: Path) -> tuple[int, int]:
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    return struct.unpack(">II", head[16:24])


def ink(png: Path) -> tuple[float, float]:
    """(share of pixels that are not page background, share that are dark like text)."""
    import matplotlib.image as mpimg

    img = mpimg.imread(png)[..., :3]
    bg = img[5, WIDTH // 2]  # the page background near the top edge
    differs = (abs(img - bg).sum(axis=2) > 0.08).mean()
    dark = (img.max(axis=2) < 0.35).mean()
    return float(differs), float(dark)


def test_report_pages_render_in_headless_chromium_without_console_errors(demo_lake, tmp_path):
    lk = Lake(demo_lake)
    inv = lk.read("invoices")
    # the busiest invoice that takes something off, and a period summary (the few periods that
    # start on 15 Oct: rendering a whole month's invoices would only cost time here)
    pick = inv.filter((pl.col("credits_applied") > 0) | (pl.col("discount") > 0)).sort(
        "usage_amount", "invoice_id", descending=[True, False]).row(0, named=True)
    invoice_page = render_invoice(lk, pick["invoice_id"])
    summary_page = render_period(lk, "2026-10-15")[0]
    bad_page = tmp_path / "bad.html"  # proves the console check can fail
    bad_page.write_text("<!doctype html><title>x</title><p>x</p><script>console.error('boom'); nope();</script>")

    runs = {p: start(p, tmp_path) for p in (invoice_page, summary_page, bad_page)}  # in parallel
    results = {}
    for page, (proc, png) in runs.items():
        try:
            out, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"Chromium did not finish {page.name} in 90 s:\n{err[-2000:]}")
        results[page] = (proc.returncode, out, err, png)

    code, _, err, _ = results[bad_page]
    assert [ln for ln in err.splitlines() if CONSOLE.search(ln)], "the console check saw nothing on a page that throws"

    for page in (invoice_page, summary_page):
        code, dom, err, png = results[page]
        assert code == 0, f"Chromium failed on {page.name} ({code}):\n{err[-2000:]}"
        console = [ln for ln in err.splitlines() if CONSOLE.search(ln)]
        assert not console, f"{page.name}: console errors:\n" + "\n".join(console)
        assert png.is_file() and png_size(png) == (WIDTH, HEIGHT), page.name
        differs, dark = ink(png)
        assert differs > 0.05, f"{page.name}: the screenshot is nearly blank ({differs:.1%} drawn)"
        assert dark > 0.002, f"{page.name}: no text-dark pixels in the screenshot ({dark:.2%})"
        assert "</html>" in dom and ('id="total-due"' if page == invoice_page else 'id="invoice-count"') in dom

    _, dom, _, _ = results[invoice_page]
    due = re.search(r'id="total-due"[^>]*>([^<]+)<', dom)
    assert due and amount(due.group(1)) == pick["total_due"], due and due.group(1)
    assert dom.count("data-line-id=") == lk.read("line_items").filter(pl.col("invoice_id") == pick["invoice_id"]).height
    assert dom.count("<svg") >= 1  # the usage charts were laid out
