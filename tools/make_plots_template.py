"""Write the HTML template that lets `dvc plots show` draw its charts offline.

    python tools/make_plots_template.py            # rewrites tools/plots_template.html
    python tools/make_plots_template.py --check    # exit 1 if the committed file is stale

DVC's default page loads Vega, Vega-Lite and vega-embed from a CDN: offline,
every Vega chart stays blank. This script inlines the three libraries instead,
as the single self-contained bundle that ``vl_convert.javascript_bundle()``
(vl-convert-python, pinned in requirements.txt) builds, into a template that
``.dvc/config`` registers (``[plots] html_template``, a path relative to
``.dvc/``). DVC fills ``{plot_divs}`` (and ``{refresh_tag}``) by plain string
replacement; the template has no ``{scripts}``, so DVC adds no CDN tag. The
template is committed: a fresh clone needs neither this script nor the network.
Run it again after changing the vl-convert-python pin.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "plots_template.html"
VEGA_LITE_VERSION = "5.21"
"""The newest Vega-Lite 5: DVC's plot templates are written for the v5 schema."""
PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Vega {vega}, Vega-Lite {vega_lite} and vega-embed {vega_embed}, inlined from
         vl-convert-python {vl_convert} by tools/make_plots_template.py: no network needed. -->
    <script type="text/javascript">
(function () {{  // a function scope: the bundle's top-level names stay out of the page's
{bundle}
}})();
    </script>
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def inline_script(javascript: str) -> str:
    """``javascript`` made safe inside ``<script>...</script>``.

    The HTML parser ends a script element at the first ``</script``, whatever the
    JavaScript means by it: written ``<\\/script`` it reads the same to JavaScript
    (``\\/`` is ``/`` in strings and regular expressions). A ``<!--`` cannot be
    escaped that way and is refused, as are DVC's placeholders, which DVC would
    replace inside the code.

    Raises:
        ValueError: the code holds ``<!--`` or one of DVC's placeholders.
    """
    escaped = re.sub(r"</(script)", r"<\\/\1", javascript, flags=re.IGNORECASE)
    for bad in ("<!--", *PLACEHOLDERS):
        if bad in escaped:
            raise ValueError(f"inline_script: the bundle holds {bad!r}; cannot inline it safely")
    return escaped


def render() -> str:
    """The template's text: the page with the bundle of the installed vl-convert-python.

    The bundle runs inside a function, so that its top-level names (``n``, ``t``, ...)
    cannot clash with those of DVC's per-chart scripts (``var spec``); it exports
    ``vegaEmbed``, ``vega`` and ``vegaLite`` through ``window``.
    """
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)
    page = PAGE.format(
        vega=vl_convert.get_vega_version(), vega_lite=VEGA_LITE_VERSION,
        vega_embed=vl_convert.get_vega_embed_version(), vl_convert=_version("vl-convert-python"),
        bundle=inline_script(bundle), refresh_tag="{refresh_tag}", plot_divs="{plot_divs}",
    )  # fmt: skip
    if page.count("{plot_divs}") != 1 or "{scripts}" in page:
        raise ValueError("render: expected one {plot_divs} and no {scripts} in the template")
    return page


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TEMPLATE, help="default: %(default)s")
    parser.add_argument("--check", action="store_true", help="only compare with --out")
    args = parser.parse_args(argv)
    try:
        page = render()
    except ImportError:
        print("error: vl-convert-python is not installed; run `make setup`", file=sys.stderr)
        return 1
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != page:
            print(f"error: {args.out} is stale; run `python tools/make_plots_template.py`",
                  file=sys.stderr)  # fmt: skip
            return 1
        return 0
    args.out.write_text(page, encoding="utf-8")
    print(f"wrote {args.out} ({len(page):,} characters)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
