"""`dvc plots show` draws every chart with no network: the template and a real browser.

DVC's default page loads Vega from a CDN. tools/plots_template.html inlines the
libraries instead (tools/make_plots_template.py writes it) and .dvc/config
registers it. The browser test copies what `dvc plots show` reads (dvc.yaml,
params.yaml, .dvc/config, the template and the committed reports) to tmp_path,
renders the page there, loads it in headless Chromium (Debian's `chromium`,
installed by .ci/run) with the network cut off, and checks that each Vega
chart's container holds a drawn ``svg`` or ``canvas`` of class ``marks``.
"""

from __future__ import annotations

import configparser
import html.parser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.common import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "tools"))
import make_plots_template  # tools/ is a folder of scripts, not a package

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=15000",
]  # fmt: skip
# Without `unshare -n`: send every request to a closed port, resolve no host name.
OFFLINE_FLAGS = [
    "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]  # fmt: skip
REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.IGNORECASE)


def registered_template() -> Path:
    """The template .dvc/config names (``plots.html_template``, relative to .dvc/)."""
    config = configparser.ConfigParser()
    config.read(PROJECT_ROOT / ".dvc" / "config")
    return (PROJECT_ROOT / ".dvc" / config["plots"]["html_template"]).resolve()


def test_config_registers_the_committed_template():
    template = registered_template()
    assert template == make_plots_template.TEMPLATE
    text = template.read_text(encoding="utf-8")
    assert text.count("{plot_divs}") == 1
    assert "{scripts}" not in text  # DVC would put its CDN script tags there
    assert not REMOTE_SCRIPT.search(text)
    assert len(re.findall(r"</script", text, re.IGNORECASE)) == 1  # only the tag's own end


def test_committed_template_is_what_the_generator_writes():
    pytest.importorskip("vl_convert", reason="vl-convert-python is in requirements.txt")
    assert make_plots_template.render() == registered_template().read_text(encoding="utf-8"), (
        "tools/plots_template.html is stale: run `python tools/make_plots_template.py`"
    )


def test_inline_script_escapes_the_end_tag_and_refuses_what_it_cannot_escape():
    assert make_plots_template.inline_script('a="</script>";b="</SCRIPT"') == (
        'a="<\\/script>";b="<\\/SCRIPT"'
    )
    for bad in ("x = '<!--'", "s = '{plot_divs}'"):
        with pytest.raises(ValueError, match="cannot inline it safely"):
            make_plots_template.inline_script(bad)


class _Marks(html.parser.HTMLParser):
    """For each element id in ``ids``: does a descendant ``svg``/``canvas`` have class marks?"""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
                      "meta", "source", "track", "wbr"})  # fmt: skip

    def __init__(self, ids):
        super().__init__()
        self.drawn = dict.fromkeys(ids, False)
        self.stack: list[str | None] = []  # the tracked id each open element belongs to

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        owner = attrs.get("id") if attrs.get("id") in self.drawn else None
        owner = owner or next((o for o in reversed(self.stack) if o), None)
        classes = (attrs.get("class") or "").split()
        if owner and tag in ("svg", "canvas") and "marks" in classes:
            self.drawn[owner] = True
        if tag not in self.VOID:
            self.stack.append(owner)

    def handle_endtag(self, tag):
        if tag not in self.VOID and self.stack:
            self.stack.pop()


def _offline_command(url: str, extra: list[str]) -> list[str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    command = [chromium, *CHROMIUM_FLAGS, *extra, url]
    unshare = shutil.which("unshare")
    cut = unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0
    return [unshare, "-n", *command] if cut else [command[0], *OFFLINE_FLAGS, *command[1:]]


@pytest.mark.slow
@pytest.mark.skipif(
    not (shutil.which("chromium") or shutil.which("chromium-browser")),
    reason="needs Chromium (`apt-get install chromium`; .ci/run installs it)",
)
def test_dvc_plots_show_draws_every_chart_offline(tmp_path):
    dvc = Path(sys.executable).with_name("dvc")
    if not dvc.exists():
        pytest.skip("needs dvc (installed by `make test`)")
    repo = tmp_path / "repo"
    for name in ("dvc.yaml", "params.yaml", ".dvc/config", "reports"):
        source, target = PROJECT_ROOT / name, repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
    template = registered_template().relative_to(PROJECT_ROOT)
    (repo / template).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(PROJECT_ROOT / template, repo / template)
    subprocess.run([str(dvc), "plots", "show", "-o", "plots"], cwd=repo, check=True,
                   capture_output=True, text=True, timeout=300)  # fmt: skip
    page = (repo / "plots" / "index.html").read_text(encoding="utf-8")
    assert not REMOTE_SCRIPT.search(page), "the page loads a script from the network"
    ids = re.findall(r"vegaEmbed\('#([^']+)'", page)
    assert len(ids) == 8, ids  # loss, accuracy, confusion and mininn vs PyTorch, per dataset

    url = (repo / "plots" / "index.html").as_uri()
    profile = ["--user-data-dir=" + str(tmp_path / "profile"), "--dump-dom"]
    env = {**os.environ, "HOME": str(tmp_path)}  # Chromium writes caches under HOME
    result = subprocess.run(_offline_command(url, profile), capture_output=True, text=True,
                            timeout=300, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    parser = _Marks(ids)
    parser.feed(result.stdout)
    blank = [plot for plot, drawn in parser.drawn.items() if not drawn]
    assert not blank, f"charts not drawn offline: {blank}"
    assert result.stdout.count('class="marks"') == len(ids)
