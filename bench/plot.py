#!/usr/bin/env python3
"""Write a small SVG line chart from a whitespace table (bench/curves.sh, README "Performance").

Usage: plot.py TITLE XLABEL YLABEL OUT.svg < table
The table's first line names the columns: x, then one series per column. Rows are numbers;
`-` is a missing point. The x axis is logarithmic (the curves span 1 to 2000 sessions or
2 KiB to 2 MiB); the y axis is linear from 0. Standard library only: the plot is text.
"""

import math
import sys

W, H = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 70, 150, 40, 50
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    title, xlabel, ylabel, out = sys.argv[1:]
    rows = [line.split() for line in sys.stdin if line.strip() and not line.startswith("#")]
    if len(rows) < 2:
        sys.exit("plot.py: no data")
    names, data = rows[0][1:], rows[1:]
    xs = [float(r[0]) for r in data]
    series = []
    for i, name in enumerate(names):
        pts = [(float(r[0]), float(r[i + 1])) for r in data if len(r) > i + 1 and r[i + 1] != "-"]
        series.append((name, pts))
    ymax = max((y for _, pts in series for _, y in pts), default=1.0) or 1.0
    ymax *= 1.1
    lx0, lx1 = math.log10(min(xs)), math.log10(max(xs))
    if lx1 == lx0:
        lx1 = lx0 + 1
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x):
        return LEFT + (math.log10(x) - lx0) / (lx1 - lx0) * pw

    def py(y):
        return TOP + ph - y / ymax * ph

    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{esc(title)}</text>',
        f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" stroke="black"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}" stroke="black"/>',
        f'<text x="{LEFT + pw / 2}" y="{H - 12}" text-anchor="middle">{esc(xlabel)}</text>',
        f'<text x="16" y="{TOP + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + ph / 2})">{esc(ylabel)}</text>',
    ]
    for x in xs:
        svg.append(
            f'<line x1="{px(x):.1f}" y1="{TOP + ph}" x2="{px(x):.1f}" y2="{TOP + ph + 4}" stroke="black"/>'
            f'<text x="{px(x):.1f}" y="{TOP + ph + 18}" text-anchor="middle">{x:g}</text>'
        )
    for k in range(6):
        y = ymax * k / 5
        svg.append(
            f'<line x1="{LEFT - 4}" y1="{py(y):.1f}" x2="{LEFT + pw}" y2="{py(y):.1f}" stroke="#ddd"/>'
            f'<text x="{LEFT - 8}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>'
        )
    for i, (name, pts) in enumerate(series):
        c = COLOURS[i % len(COLOURS)]
        if pts:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            svg.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{path}"/>')
            for x, y in pts:
                svg.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{c}"/>')
        ly = TOP + 16 * i + 8
        svg.append(
            f'<line x1="{LEFT + pw + 12}" y1="{ly}" x2="{LEFT + pw + 32}" y2="{ly}" stroke="{c}" stroke-width="2"/>'
            f'<text x="{LEFT + pw + 36}" y="{ly + 4}">{esc(name)}</text>'
        )
    svg.append("</svg>")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
