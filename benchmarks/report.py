"""Turn the benchmark's results into Markdown: the tables, the targets, the environment."""

from __future__ import annotations

import re
from pathlib import Path

NAMES = {"mininn": "mininn", "torch": "PyTorch", "sklearn": "scikit-learn"}
NETWORKS = {"plain": "MLP", "bn_dropout": "MLP+BN+Dropout"}
README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"


def _time(fw: dict | None) -> str:
    if fw is None:
        return "–"
    return f"{fw['median_s']:.3f} ({fw['min_s']:.3f}–{fw['max_s']:.3f})"


def _ratio(ratio: dict | None) -> str:
    if ratio is None:
        return "–"
    return f"**{ratio['median']:.2f}** ({ratio['min']:.2f}–{ratio['max']:.2f})"


def _per_framework(run: dict, key: str, fmt: str) -> str:
    return " / ".join(
        fmt.format(run["frameworks"][n][key]) if n in run["frameworks"] else "–" for n in NAMES
    )


def _blas_line(pools: list[dict]) -> str:
    return "; ".join(
        f"{p['internal_api']} {p['version']} ({p['prefix']}), kernel {p['architecture']}"
        if p.get("user_api") == "blas"
        else f"{p['internal_api']} ({p['prefix']})"
        for p in pools
    )


def _runs_table(runs: list[dict]) -> list[str]:
    lines = [
        "| threads | batch | network | mininn s/epoch | PyTorch s/epoch | scikit-learn s/epoch "
        "| mininn / PyTorch | mininn / sklearn | GEMM bound s | mininn / bound (8 products) "
        "| mininn outside GEMM | samples/s (mininn / PyTorch / sklearn) "
        "| peak RSS MiB (mininn / PyTorch / sklearn) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        fws = run["frameworks"]
        ratios = run.get("ratios", {})
        bound = run.get("bound", {})
        mininn_bound = bound.get("mininn")
        lines.append(
            f"| {run['threads']} | {run['batch_size']} | {NETWORKS[run['variant']]} "
            f"| {_time(fws.get('mininn'))} | {_time(fws.get('torch'))} "
            f"| {_time(fws.get('sklearn'))} | {_ratio(ratios.get('torch'))} "
            f"| {_ratio(ratios.get('sklearn'))} "
            + (
                f"| {mininn_bound['seconds']:.3f} | {mininn_bound['multiple']['median']:.2f}× "
                f"({mininn_bound['multiple_of_8']['median']:.2f}×) "
                f"| {mininn_bound['outside_gemm_share']:.0%} "
                if mininn_bound
                else "| – | – | – "
            )
            + f"| {_per_framework(run, 'samples_per_s', '{:,.0f}')} "
            + f"| {_per_framework(run, 'peak_rss_mib', '{:.0f}')} |"
        )
    return lines


def _gemm_table(gemm: dict, batch: int) -> list[str]:
    lines = [
        "| product | A × B | µs | GFLOP/s |",
        "|---|---|---:|---:|",
    ]
    for p in gemm["products"][str(batch)]:
        a, b = p["a"], p["b"]
        lines.append(
            f"| {p['name']} | ({a[0]}×{a[1]}) × ({b[0]}×{b[1]}) "
            f"| {p['seconds'] * 1e6:.0f} | {p['gflops']:.1f} |"
        )
    for products in (8, 9):
        bound = gemm["bounds"][str(batch)][f"products_{products}"]
        lines.append(
            f"| **epoch, {products} products a step** | {bound['flops'] / 1e9:.1f} GFLOP "
            f"| {bound['seconds'] * 1e6:,.0f} | {bound['gflops']:.1f} |"
        )
    return lines


def _floor_table(results: dict, title: dict[str, str]) -> list[str]:
    """What a NumPy step cannot avoid, batch 128 MLP: the products plus Adam's update."""
    rows = []
    for key, gemm in results["gemm"].items():
        if "adam_step_seconds" not in gemm or "128" not in gemm["bounds"]:
            continue  # results from before the Adam timing was added
        column, threads = key.split("/")
        adam = gemm["adam_step_seconds"] * gemm["steps_per_epoch"]["128"]
        run = next(
            (
                r
                for r in results["runs"]
                if (r["blas_env"], r["threads"], r["batch_size"], r["variant"])
                == (column, int(threads), 128, "plain")
            ),
            None,
        )
        # The bound of the table above (the per-round median) where there is one.
        per_round = (run or {}).get("bound", {}).get("products_8")
        bound = (
            per_round["median_s"] if per_round else gemm["bounds"]["128"]["products_8"]["seconds"]
        )
        fws = run["frameworks"] if run else {}
        mininn = fws.get("mininn", {}).get("median_s")
        torch = fws.get("torch", {}).get("median_s")

        def fmt(value: float | None, spec: str = "{:.3f}") -> str:
            return "–" if value is None else spec.format(value)

        rows.append(
            f"| {title[column]} | {threads} | {bound:.3f} | {adam:.3f} | {bound + adam:.3f} "
            f"| {fmt(mininn)} | {fmt(torch)} "
            f"| {fmt(torch and (bound + adam) / torch, '{:.2f}')} "
            f"| {fmt(mininn and mininn / (bound + adam), '{:.2f}×')} |"
        )
    if not rows:
        return []
    return [
        "",
        "## The floor of a NumPy step with Adam (MLP, batch 128)",
        "",
        "Besides its eight matrix products, every step runs Adam's element-wise update over all "
        "235,146 parameters (about twelve passes: the moments, a square root, a division). "
        "Timed alone (`mininn.optim.Adam.step()`, best of 10, times the steps of an epoch) and "
        "added to the GEMM bound of the table above, it gives the least an epoch can take "
        "in NumPy with this optimizer; 'floor / PyTorch' is the best mininn / PyTorch ratio "
        "reachable here (PyTorch's median epoch from the table above).",
        "",
        "| BLAS environment | threads | GEMM bound s | Adam alone s | floor s "
        "| mininn s | PyTorch s | floor / PyTorch | mininn / floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]


def _targets(results: dict) -> list[str]:
    """The issue's targets, checked on the column with the kernel variables unset."""
    column = "unset" if "unset" in results["blas_columns"] else results["blas_columns"][0]
    runs = {
        (r["threads"], r["batch_size"], r["variant"]): r
        for r in results["runs"]
        if r["blas_env"] == column
    }
    checks = []

    def check(label: str, value: float | None, limit: float, fmt: str = "{:.2f}") -> None:
        if value is None:
            checks.append(f"| {label} | not measured | ≤ {fmt.format(limit)} | – |")
        else:
            verdict = "pass" if value <= limit else "**FAIL**"
            checks.append(f"| {label} | {fmt.format(value)} | ≤ {fmt.format(limit)} | {verdict} |")

    def value(key: tuple, *path: str) -> float | None:
        node = runs.get(key)
        for step in path:
            if not isinstance(node, dict) or step not in node:
                return None
            node = node[step]
        return node

    for threads, limit in ((1, 0.6), (2, 0.8)):
        for variant in ("plain", "bn_dropout"):
            check(
                f"mininn / PyTorch, batch 128, {threads} thread(s), {NETWORKS[variant]}",
                value((threads, 128, variant), "ratios", "torch", "median"),
                limit,
            )
    check(
        "mininn / scikit-learn, batch 128, 1 thread (≥ 1.6× faster)",
        value((1, 128, "plain"), "ratios", "sklearn", "median"),
        1 / 1.6,
    )
    check(
        "mininn / GEMM bound, batch 128, 1 thread",
        value((1, 128, "plain"), "bound", "mininn", "multiple", "median"),
        2.0,
    )
    peaks = [
        r["frameworks"]["mininn"]["peak_rss_mib"]
        for r in results["runs"]
        if "mininn" in r["frameworks"]
    ]
    check(
        "mininn peak RSS, MiB (largest of all runs)", max(peaks) if peaks else None, 384, "{:.0f}"
    )
    for name, prep in results.get("prepare", {}).items():
        check(f"prepare {name}, s", prep.get("median_s"), 2.0)
    quick = (
        ["**A `--quick` smoke run (1 epoch, 10,000 samples): not comparable to the targets.**", ""]
        if results["settings"].get("quick")
        else []
    )
    return [
        *quick,
        f"Targets of issue 6, on the column `{column}`"
        + (
            " (the kernel variables are not set here, so it is the only one)"
            if column == "as-set"
            else ""
        )
        + f", from {results['settings']['samples']:,} samples:",
        "",
        "| target | measured | limit | |",
        "|---|---:|---:|---|",
        *checks,
    ]


def markdown(results: dict) -> str:
    """The whole report as Markdown."""
    m = results["machine"]
    s = results["settings"]
    versions: dict[str, str] = {}
    blas: dict[str, str] = {}
    torch_info: list[str] = []
    for run in results["runs"]:
        for name, fw in run["frameworks"].items():
            info = fw["info"]
            versions.setdefault("numpy", info.get("numpy"))
            for key in ("torch", "sklearn", "mininn"):
                if info.get(key):
                    versions.setdefault(key, info[key])
            if name == "mininn" or (name == "sklearn" and run["blas_env"] not in blas):
                blas[run["blas_env"]] = f"{_blas_line(info['blas'])} (in the {name} worker)"
            elif name == "torch" and not torch_info:
                torch_info = info.get("torch_parallel_info", [])
    env = results["blas_env_host"]
    lines = [
        "# Training speed: mininn, PyTorch and scikit-learn",
        "",
        *(
            []
            if results.get("complete")
            else ["**Partial results: the run was interrupted or is still going.**", ""]
        ),
        f"784-256-128-10 ReLU MLP (and with BatchNorm1d + Dropout(0.2), not in scikit-learn), "
        f"Adam(lr=1e-3), cross-entropy, float32; {s['dataset']}, first {s['samples']:,} training "
        f"images. {s['epochs']} timed epoch(s) after {s['warmup']} warm-up, each framework in its "
        "own process, taking turns epoch by epoch; time in seconds per epoch as median (min–max); "
        "ratios are the median (min–max) of the per-round ratios. The GEMM bound is the time "
        "NumPy's BLAS takes for the matrix products of an epoch alone (see below).",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']:.1f} GiB; {m['platform']}; "
        f"Python {m['python']}; commit {m['commit']}; {m['date']}",
        "- Versions: " + ", ".join(f"{NAMES.get(k, k)} {v}" for k, v in versions.items() if v),
        *(f"- NumPy's BLAS ({column}): {line}" for column, line in blas.items()),
        "- BLAS variables on the host: "
        + ", ".join(f"`{k}`={v if v is not None else '(unset)'}" for k, v in env.items())
        + "; workers get the thread variables set to their thread count, plus threadpoolctl "
        "and `torch.set_num_threads`",
    ]
    if torch_info:
        keep = [t.strip() for t in torch_info if "(" in t and "threads()" not in t]
        lines.append("- PyTorch's CPU back ends: " + "; ".join(keep))
    title = {
        "as-set": "BLAS environment as set",
        "unset": "`OPENBLAS_CORETYPE` and `OPENBLAS_L2_SIZE` unset",
    }
    for column in results["blas_columns"]:
        runs = [r for r in results["runs"] if r["blas_env"] == column]
        lines += ["", f"## Seconds per epoch: {title[column]}", "", *_runs_table(runs)]
        errors = {(r["threads"], r["batch_size"], r["variant"]): r["errors"] for r in runs}
        for key, errs in errors.items():
            for name, message in errs.items():
                quoted = "\n".join(f"    {line}" for line in message.splitlines())
                lines.append(f"\n{NAMES.get(name, name)} failed at {key}:\n\n{quoted}")
    if results["blas_columns"] == ["as-set"]:
        lines += [
            "",
            "Neither `OPENBLAS_CORETYPE` nor `OPENBLAS_L2_SIZE` is set here, so the column "
            "with them unset is the same as this one and was not measured twice.",
        ]
    lines += ["", "## GEMM lower bound", ""]
    lines.append(
        "Each product of one step timed alone with `np.matmul(a, b, out=)` in float32, best of "
        "k, operands laid out as mininn's `Linear` has them; FLOPs 2·m·n·k. The epoch bound sums "
        "the products over an epoch's batches; mininn's count (8 or 9 a step: 3 forward, 3 "
        "weight gradients, 2 or 3 input gradients) is what its backward does (PyTorch and "
        "scikit-learn skip the input's gradient: 8). The bound in the tables above is "
        "measured anew in every round, in its own process taking its turn "
        "among the frameworks (best of 3), and given as its median, with as many products as "
        "mininn does; 'mininn / bound' is the median of the per-round ratios (in brackets: "
        "against the 8-product bound, which a step needs at least) and 'outside GEMM' is "
        "1 − 1 / that. The tables below break one separate measurement (best of 10) down by "
        "product."
    )
    for key, gemm in results["gemm"].items():
        column, threads = key.split("/")
        batch = 128 if "128" in gemm["products"] else int(next(iter(gemm["products"])))
        lines += ["", f"### {title[column]}, {threads} thread(s), batch {batch}", ""]
        lines += _gemm_table(gemm, batch)
    lines += _floor_table(results, title)
    profiles = [r["profile"]["path"] for r in results["runs"] if "profile" in r]
    if profiles:
        lines += [
            "",
            f"mininn's profile (cProfile, one epoch, batch 128, 1 thread): `{profiles[0]}`.",
        ]
    prepare = results.get("prepare")
    if prepare:
        lines += ["", "## `prepare` (IDX to Parquet, a fresh process)", ""]
        lines += [
            "The process's wall time (Python's start and imports included, as DVC runs it), "
            "and the stage's own work: `prepare.main()` timed in a fresh process after its "
            "imports, scikit-learn's, matplotlib's and pyarrow's included.",
            "",
            "| dataset | process s | in-process work s | |",
            "|---|---:|---:|---|",
        ]
        for name, p in prepare.items():
            if p["status"] == "ok":
                work = p.get("in_process", {})
                work_cell = (
                    f"{work['median_s']:.2f} ({work['min_s']:.2f}–{work['max_s']:.2f})"
                    if work.get("status") == "ok"
                    else "–"
                )
                lines.append(
                    f"| {name} | {p['median_s']:.2f} ({p['min_s']:.2f}–{p['max_s']:.2f}) "
                    f"| {work_cell} | {p['runs']} run{'s' if p['runs'] != 1 else ''} |"
                )
            else:
                reason = p.get("reason") or p.get("stderr_tail", "").strip().splitlines()[-1:]
                lines.append(f"| {name} | {p['status']} | {reason} |")
    repro = results.get("repro")
    if repro:
        lines += ["", f"`dvc repro -f`: {repro.get('median_s', 0):.0f} s ({repro['status']})"]
    loads = [x for r in results["runs"] for x in r.get("load_average", [])]
    if loads:
        lines += [
            "",
            f"Host load average (1 min) at the start and end of each configuration: "
            f"{min(loads):.1f}–{max(loads):.1f} on {m['cores']} cores; other processes' work "
            "slows every framework, 2-thread runs most: trust paired ratios over absolute times.",
        ]
    lines += ["", "## Targets", "", *_targets(results), ""]
    lines.append(f"Whole benchmark: {results['wall_seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def update_readme(path: Path, table: str) -> None:
    """Put ``table`` between the results markers of ``path`` (a no-op without markers)."""
    text = path.read_text()
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.DOTALL)
    if pattern.search(text):
        body = table.split("\n", 1)[1]  # the README has its own title
        body = re.sub(r"^(#+) ", r"#\1 ", body, flags=re.MULTILINE)  # nest under "Results"
        path.write_text(pattern.sub(lambda _: f"{README_START}\n{body}{README_END}", text))
