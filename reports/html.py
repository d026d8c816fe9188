"""One self-contained HTML page for one or more runs: no scripts, no network; plots are
inline SVG."""

from __future__ import annotations

import html as _html
import math

from reports import model

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
"""


def esc(x) -> str:
    return _html.escape(str(x))


def css_class(cell: str) -> str:
    return cell.replace(" ", "-")


def histogram_svg(values: list[float], title: str, limit: float = 1.0, bins: int = 20) -> str:
    """Bars of err/tolerance over [0, max(limit, max value)]; the tolerance is the red line."""
    w, h, pad = 360, 120, 20
    if not values:
        return f'<svg width="{w}" height="30"><text x="4" y="20" font-size="12">{esc(title)}: ' \
               f'no comparisons</text></svg>'
    top = max(limit * 1.05, max(values))
    counts = [0] * bins
    for v in values:
        counts[min(int(v / top * bins), bins - 1)] += 1
    peak = max(counts)
    bw = (w - 2 * pad) / bins
    bars = "".join(
        f'<rect x="{pad + i * bw:.1f}" y="{h - pad - c / peak * (h - 2 * pad):.1f}" '
        f'width="{bw - 1:.1f}" height="{c / peak * (h - 2 * pad):.1f}" fill="#5b8def"/>'
        for i, c in enumerate(counts) if c)
    x_tol = pad + limit / top * (w - 2 * pad)
    return (f'<svg width="{w}" height="{h}" role="img" aria-label="{esc(title)}">'
            f'<text x="{pad}" y="12" font-size="11">{esc(title)} (n={len(values)}, '
            f'max {max(values):.3g} of tolerance)</text>{bars}'
            f'<line x1="{x_tol:.1f}" x2="{x_tol:.1f}" y1="{pad}" y2="{h - pad}" stroke="red"/>'
            f'<text x="{pad}" y="{h - 4}" font-size="10">0</text>'
            f'<text x="{w - pad - 30}" y="{h - 4}" font-size="10">{top:.2g}</text></svg>')


def bars_svg(items: list[tuple[str, float]], title: str) -> str:
    """Horizontal bars, log scale: examples to kill per faulty kernel."""
    if not items:
        return ""
    row, label_w, w = 14, 230, 560
    top = max(math.log10(v + 1) for _, v in items) or 1.0
    h = row * len(items) + 24
    out = [f'<svg width="{w}" height="{h}" role="img" aria-label="{esc(title)}">'
           f'<text x="0" y="12" font-size="11">{esc(title)}</text>']
    for i, (name, v) in enumerate(items):
        y = 18 + i * row
        bw = (w - label_w - 40) * math.log10(v + 1) / top
        out.append(f'<text x="0" y="{y + 10}" font-size="10">{esc(name)}</text>'
                   f'<rect x="{label_w}" y="{y}" width="{bw:.1f}" height="{row - 3}" '
                   f'fill="#e08a3c"/><text x="{label_w + bw + 3:.1f}" y="{y + 10}" '
                   f'font-size="10">{v:g}</text>')
    out.append("</svg>")
    return "".join(out)


def render(runs: list[dict]) -> str:
    kernels, props, cells = model.matrix(runs)
    info = model.kernel_info(runs)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Sparse attention "
             f"conformance</title><style>{CSS}</style></head><body>",
             "<h1>Sparse decode attention conformance</h1>"]
    for run in runs:
        v = run["versions"]
        parts.append(f"<p class='small'>run {esc(run['created'])}: kernels "
                     f"<code>{esc(run['kernel_spec'])}</code>, profile {esc(run['profile'])}, "
                     f"seed {esc(run['seed'])}, derandomize {esc(run['derandomize'])}; "
                     f"torch {esc(v.get('torch'))}, pypto {esc(v.get('pypto'))}, hypothesis "
                     f"{esc(v.get('hypothesis'))}; {run['seconds']:.1f} s</p>")
    parts.append("<h2>Conformance matrix</h2><table id='matrix'><tr><th>kernel</th>")
    parts += [f"<th>{esc(p.removeprefix('test_'))}</th>" for p in props]
    parts.append("</tr>")
    for k in kernels:
        tag = " (faulty)" if info.get(k, {}).get("faulty") else ""
        parts.append(f"<tr><th>{esc(k)}{tag}</th>")
        for p in props:
            c = cells.get((k, p), "")
            parts.append(f"<td class='{css_class(c)}' data-kernel='{esc(k)}' "
                         f"data-property='{esc(p)}'>{esc(c)}</td>")
        parts.append("</tr>")
    parts.append("</table>")

    left_out = [(k, i["unexercised"], i["preconditions"].get("note", ""))
                for k, i in info.items() if i["unexercised"]]
    if left_out:
        parts.append("<h2>Left out by kernel preconditions</h2><ul>")
        parts += [f"<li><b>{esc(k)}</b>: {esc('; '.join(u))}"
                  f"{' (' + esc(n) + ')' if n else ''}</li>" for k, u, n in left_out]
        parts.append("</ul>")

    results = [r for run in runs for r in run["results"]]
    parts.append("<h2>Error against the tolerance</h2><p class='small'>Each passing "
                 "comparison's largest error as a fraction of its tolerance; the red line is "
                 "the tolerance.</p>")
    for k in kernels:
        if info.get(k, {}).get("faulty"):
            continue
        for r in results:
            if r["kernel"] == k and r.get("ratios"):
                parts.append(histogram_svg(r["ratios"], f"{k} / {r['property']}"))

    kills = [(r["kernel"], r["first_failure_example"]) for r in results
             if info.get(r["kernel"], {}).get("faulty") and r.get("first_failure_example")]
    best: dict[str, float] = {}
    for k, n in kills:
        best[k] = min(best.get(k, n), n)
    if best:
        parts.append("<h2>Examples to kill</h2>")
        parts.append(bars_svg(sorted(best.items()), "fewest examples until a property failed"))

    findings = [r for r in results if r.get("contract_finding")]
    if findings:
        parts.append("<h2 id='findings'>Findings about the contract</h2>")
        for r in findings:
            parts.append(_failure(r))
    failures = [r for r in results if r["status"] == "failed" and not r.get("contract_finding")]
    parts.append(f"<h2 id='failures'>Failures ({len(failures)})</h2>")
    parts += [_failure(r) for r in failures]
    parts.append("</body></html>")
    return "".join(parts)


def _failure(r: dict) -> str:
    ce = r.get("counterexample") or {}
    out = [f"<h3>{esc(r['kernel'])}: {esc(r['property'])} [{esc(r['status'])}]</h3>"]
    if ce:
        out.append(f"<p class='small'>shrunk counterexample size: {esc(ce.get('size'))}; "
                   f"first failure after {esc(r.get('first_failure_example'))} examples</p>")
        out.append(f"<pre>{esc(ce.get('error', ''))}\n\n{esc(ce.get('case', ''))}</pre>")
    elif r.get("message"):
        out.append(f"<pre>{esc(r['message'][-3000:])}</pre>")
    if r.get("diagnostics"):
        out.append(f"<p class='small'>kernel diagnostics: {esc(r['diagnostics'])}</p>")
    if r.get("replay"):
        out.append(f"<p>replay:</p><pre>{esc(r['replay'])}</pre>")
    return "".join(out)


def write(runs: list[dict], path: str) -> None:
    with open(path, "w") as f:
        f.write(render(runs))
