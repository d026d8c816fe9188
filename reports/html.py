"""One self-contained HTML page for one or more runs: no scripts, no network; plots are
inline SVG. The markup is the Jinja template `reports/templates/report.html.j2` (escaping
every value); this module prepares what it shows."""

from __future__ import annotations

import math

import jinja2

from sparse_attn_conformance.reports import model

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #bbb;padding:3px 7px;font-size:13px}
th{background:#eee;text-align:left}
td.pass{background:#c8f0c8}td.fail{background:#f6b3b3}
td.not-exercised{background:#e4e4e4;color:#666}
td.expected-fail{background:#fde9a8}td.unexpected-pass{background:#f7c27a}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px;white-space:pre-wrap}
.small{font-size:12px;color:#555}
td.num{text-align:right}td.cov-zero{background:#f6b3b3;font-weight:bold}
td.cov-none{color:#999;text-align:center}tr.total td,tr.total th{border-top:2px solid #888}
details.coverage summary{cursor:pointer;margin:.3em 0}
table.heat td{padding:1px 4px;font-size:11px;text-align:right}
span.lane{display:inline-block;width:7px;height:11px;margin-right:1px;border:1px solid #777}
span.lane.live{background:#6a8fd6}span.lane.ignored{background:#fff}
span.lane.blamed{border:2px solid #d00}
"""

#: Shown under the coverage table's heading.
COVERAGE_TEXT = (
    "Per kernel, one row per property: the examples whose body ran and the draws the property "
    "rejected before its body ran, then, per corner of the input domain (hover a column header "
    "for its definition), how many of those examples hit it. Counts include Hypothesis' "
    "shrinking replays and are summed over the page's runs; the last row sums the kernel's "
    "properties. A red 0 is a corner the property never reached; \u2013 marks a property that "
    "drew no examples (skipped, or not a Hypothesis test) or a report without coverage.")


_ENV = jinja2.Environment(loader=jinja2.PackageLoader(__package__, "templates"),
                          autoescape=True, trim_blocks=True, lstrip_blocks=True,
                          keep_trailing_newline=True)

#: How a failure is described on the page, by `failure_kind`.
FAILURE_KIND_TEXT = {"assertion": "assertion: the property's own check failed",
                     "kernel-error": "kernel-error: the kernel raised, crashed or returned "
                                     "something the contract does not allow"}


def histogram(values: list[float], title: str, limit: float = 1.0, bins: int = 20) -> dict:
    """Bars of err/tolerance over [0, max(limit, max value)]; the tolerance is the red line."""
    w, h, pad = 360, 120, 20
    out = {"title": title, "n": len(values), "w": w, "h": h, "pad": pad}
    if not values:
        return out
    top = max(limit * 1.05, max(values))
    counts = [0] * bins
    for v in values:
        counts[min(int(v / top * bins), bins - 1)] += 1
    peak = max(counts)
    bw = (w - 2 * pad) / bins
    out.update(max=max(values), top=top, x_tol=pad + limit / top * (w - 2 * pad), bars=[
        {"x": pad + i * bw, "y": h - pad - c / peak * (h - 2 * pad), "w": bw - 1,
         "h": c / peak * (h - 2 * pad)} for i, c in enumerate(counts) if c])
    return out


def kill_bars(items: list[tuple[str, float]], title: str) -> dict | None:
    """Horizontal bars, log scale: examples to kill per faulty kernel."""
    if not items:
        return None
    row, label_w, w = 14, 230, 560
    top = max(math.log10(v + 1) for _, v in items) or 1.0
    return {"title": title, "w": w, "h": row * len(items) + 24, "row": row, "label_w": label_w,
            "bars": [{"name": name, "value": v, "y": 18 + i * row,
                      "w": (w - label_w - 40) * math.log10(v + 1) / top}
                     for i, (name, v) in enumerate(items)]}


def coverage_tables(runs: list[dict], info: dict) -> list[dict]:
    """The examples-and-coverage tables, one per kernel (a faulty kernel's folded): rows per
    property, then the kernel's total (`coverage` None where no example was drawn)."""
    names = model.corners(runs)
    counts = model.coverage(runs)
    by_kernel: dict[str, list[str]] = {}
    for k, p in counts:
        by_kernel.setdefault(k, []).append(p)
    tables = []
    for k, props in by_kernel.items():
        total = {"examples": 0, "rejected": 0, "coverage": None}
        rows = []
        for p in props:
            row = counts[(k, p)]
            total["examples"] += row["examples"]
            total["rejected"] += row["rejected"]
            drew = row["examples"] > 0 and row["coverage"] is not None
            if drew:
                total["coverage"] = total["coverage"] or {}
                for c in names:
                    total["coverage"][c] = total["coverage"].get(c, 0) + row["coverage"].get(c, 0)
            rows.append({"cls": "", "property": p, "label": p.removeprefix("test_"),
                         "examples": row["examples"], "rejected": row["rejected"],
                         "coverage": row["coverage"] if drew else None})
        rows.append(dict(total, cls="total", property="", label="all properties"))
        reached = sum(1 for c in names if (total["coverage"] or {}).get(c, 0) > 0)
        tables.append({"kernel": k, "faulty": bool(info.get(k, {}).get("faulty")),
                       "rows": rows, "total": total, "reached": reached})
    return tables


def render(runs: list[dict]) -> str:
    kernels, props, cells = model.matrix(runs)
    info = model.kernel_info(runs)
    results = [r for run in runs for r in run["results"]]
    correct = [k for k in kernels if not info.get(k, {}).get("faulty")]
    best: dict[str, float] = {}
    for r in results:
        n = r.get("first_failure_example")
        if info.get(r["kernel"], {}).get("faulty") and n:
            best[r["kernel"]] = min(best.get(r["kernel"], n), n)

    def described(rs):
        return [dict(r, kind=model.failure_kind(r)) for r in rs]

    return _ENV.get_template("report.html.j2").render(
        css=CSS, runs=runs, kernels=kernels, props=props, cells=cells, info=info,
        left_out=[(k, i["unexercised"], i["preconditions"].get("note", ""))
                  for k, i in info.items() if i["unexercised"]],
        coverage_text=COVERAGE_TEXT, corners=model.corners(runs),
        coverage=coverage_tables(runs, info),
        histograms=[histogram(r["ratios"], f"{k} / {r['property']}")
                    for k in correct for r in results if r["kernel"] == k and r.get("ratios")],
        kills=kill_bars(sorted(best.items()), "fewest examples until a property failed"),
        findings=described(r for r in results if r.get("contract_finding")),
        failures=described(r for r in results
                           if r["status"] == "failed" and not r.get("contract_finding")),
        failure_kind_text=FAILURE_KIND_TEXT)


def heat(ratio: float) -> str:
    """A heat-map cell's colour for an error / tolerance ratio: white at 0, pale green up
    to the tolerance, from orange to deep red past it (log scale, saturating at 1000)."""
    if ratio <= 1:
        return f"hsl(120, 45%, {97 - 17 * ratio:.0f}%)"
    level = min(math.log10(ratio) / 3, 1.0)
    return f"hsl({30 - 30 * level:.0f}, 85%, {65 - 25 * level:.0f}%)"


_ENV.globals["heat"] = heat


def write(runs: list[dict], path: str) -> None:
    with open(path, "w") as f:
        f.write(render(runs))
