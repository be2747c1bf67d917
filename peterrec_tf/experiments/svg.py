"""Charts as hand-written SVG (no plotting dependency): bar panels with error bars and line
panels with error bars, every panel with a title, labelled axes and tick values."""

import math
from xml.sax.saxutils import escape

PALETTE = ["#7f7f7f", "#bcbd22", "#17becf", "#d62728", "#ff7f0e", "#9467bd", "#8c564b",
           "#1f77b4", "#2ca02c", "#e377c2", "#98df8a", "#aec7e8", "#393b79"]


def _ticks(low, high, count=5):
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        high = low + 1.0
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * step:
            step *= factor
            break
    start = math.floor(low / step + 1e-9) * step
    count = max(1, math.ceil((high - start) / step - 1e-9))  # the last tick at or above high
    return [round(start + i * step, 10) for i in range(count + 1)]


def _text(x, y, text, size=11, anchor="middle", rotate=None, weight="normal"):
    transform = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate is not None else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-family="sans-serif" font-weight="{weight}"{transform}>{escape(str(text))}</text>')


class _Panel:
    """Axes in a box: maps data to pixels and draws frame, ticks and axis labels."""

    def __init__(self, x0, y0, width, height, ymin, ymax, xmin=0.0, xmax=1.0):
        self.left, self.top = x0 + 60, y0 + 28
        self.width, self.height = width - 75, height - 28 - 95
        self.yticks = _ticks(ymin, ymax)
        self.ymin, self.ymax = self.yticks[0], self.yticks[-1]
        self.xmin, self.xmax = xmin, xmax

    def y(self, value):
        return self.top + self.height * (1 - (value - self.ymin) / ((self.ymax - self.ymin) or 1))

    def x(self, value):
        return self.left + self.width * (value - self.xmin) / ((self.xmax - self.xmin) or 1)

    def axes(self, title, ylabel, xlabel):
        out = [f'<rect x="{self.left}" y="{self.top}" width="{self.width}" '
               f'height="{self.height}" fill="none" stroke="#333"/>',
               _text(self.left + self.width / 2, self.top - 10, title, 12, weight="bold"),
               _text(self.left - 45, self.top + self.height / 2, ylabel, 11,
                     rotate=-90)]
        for tick in self.yticks:
            y = self.y(tick)
            out.append(f'<line x1="{self.left - 4}" y1="{y:.1f}" x2="{self.left + self.width}" '
                       f'y2="{y:.1f}" stroke="#ddd"/>')
            out.append(_text(self.left - 6, y + 4, f"{tick:g}", 10, anchor="end"))
        if xlabel:
            out.append(_text(self.left + self.width / 2, self.top + self.height + 88, xlabel, 11))
        return out


def _document(width, height, title, body, note=""):
    head = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">', f'<rect width="{width}" height="{height}" '
            'fill="white"/>', _text(width / 2, 20, title, 14, weight="bold")]
    if note:
        head.append(_text(width / 2, 38, note, 11))
    return "\n".join(head + body + ["</svg>", ""])


def bar_chart(path, title, panels, columns, note="", panel_width=360, panel_height=300):
    """panels: [{"title", "ylabel", "xlabel", "bars": [(label, value, low, high)]}];
    low/high (None = no error bar) are drawn as whiskers."""
    rows = max(1, math.ceil(len(panels) / columns))
    width, height = panel_width * columns, panel_height * rows + 45
    body = []
    for i, panel in enumerate(panels):
        x0, y0 = panel_width * (i % columns), 45 + panel_height * (i // columns)
        values = [v for _, value, low, high in panel["bars"] for v in (value, low, high)
                  if v is not None]
        box = _Panel(x0, y0, panel_width, panel_height, min(0.0, min(values, default=0)),
                     max(values, default=1) * 1.05 or 1.0)
        body += box.axes(panel["title"], panel["ylabel"], panel.get("xlabel", ""))
        slot = box.width / max(1, len(panel["bars"]))
        for j, (label, value, low, high) in enumerate(panel["bars"]):
            cx = box.left + slot * (j + 0.5)
            if value is not None:
                y = box.y(value)
                body.append(f'<rect x="{cx - slot * 0.35:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
                            f'height="{box.y(box.ymin) - y:.1f}" fill="{PALETTE[j % len(PALETTE)]}"/>')
            if low is not None and high is not None:
                body.append(f'<line x1="{cx:.1f}" y1="{box.y(low):.1f}" x2="{cx:.1f}" '
                            f'y2="{box.y(high):.1f}" stroke="black"/>')
                for edge in (low, high):
                    body.append(f'<line x1="{cx - 3:.1f}" y1="{box.y(edge):.1f}" x2="{cx + 3:.1f}" '
                                f'y2="{box.y(edge):.1f}" stroke="black"/>')
            body.append(_text(cx + 3, box.top + box.height + 8, label, 9, anchor="end",
                              rotate=-60))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(_document(width, height, title, body, note))


def line_chart(path, title, panels, columns, note="", panel_width=380, panel_height=300,
               log_x=False):
    """panels: [{"title", "ylabel", "xlabel", "series": [(label, xs, ys, errs)]}]; errs
    (None or a list with None entries) are drawn as +- whiskers; one legend per chart."""
    rows = max(1, math.ceil(len(panels) / columns))
    labels = []
    for panel in panels:
        for label, *_ in panel["series"]:
            if label not in labels:
                labels.append(label)
    legend_height = 16 * math.ceil(len(labels) / 4) + 10
    width = panel_width * columns
    height = panel_height * rows + 45 + legend_height
    body = []
    fx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    for i, panel in enumerate(panels):
        x0, y0 = panel_width * (i % columns), 45 + panel_height * (i // columns)
        ys = [y + s * (e or 0) for _, _, yy, ee in panel["series"]
              for y, e in zip(yy, ee or [None] * len(yy)) for s in (-1, 1) if y is not None]
        xs = [fx(x) for _, xx, _, _ in panel["series"] for x in xx]
        box = _Panel(x0, y0, panel_width, panel_height, min(ys, default=0), max(ys, default=1),
                     min(xs, default=0), max(xs, default=1))
        box.height += 40  # no rotated labels under a line chart
        body += [line for line in box.axes(panel["title"], panel["ylabel"], "")]
        body.append(_text(box.left + box.width / 2, box.top + box.height + 34,
                          panel["xlabel"], 11))
        xticks = sorted({x for _, xx, _, _ in panel["series"] for x in xx})
        if len(xticks) > 8:
            xticks = xticks[::math.ceil(len(xticks) / 8)]
        for tick in xticks:
            x = box.x(fx(tick))
            body.append(f'<line x1="{x:.1f}" y1="{box.top + box.height}" x2="{x:.1f}" '
                        f'y2="{box.top + box.height + 4}" stroke="#333"/>')
            body.append(_text(x, box.top + box.height + 16, f"{tick:g}", 10))
        for label, xx, yy, ee in panel["series"]:
            color = PALETTE[labels.index(label) % len(PALETTE)]
            points = [(box.x(fx(x)), box.y(y)) for x, y in zip(xx, yy) if y is not None]
            if points:
                body.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>'
                            % (color, " ".join(f"{x:.1f},{y:.1f}" for x, y in points)))
            for x, y, e in zip(xx, yy, ee or [None] * len(yy)):
                if y is None:
                    continue
                px = box.x(fx(x))
                body.append(f'<circle cx="{px:.1f}" cy="{box.y(y):.1f}" r="2.5" fill="{color}"/>')
                if e:
                    body.append(f'<line x1="{px:.1f}" y1="{box.y(y - e):.1f}" x2="{px:.1f}" '
                                f'y2="{box.y(y + e):.1f}" stroke="{color}"/>')
    top = height - legend_height + 5
    for i, label in enumerate(labels):
        x, y = 20 + (width - 40) / 4 * (i % 4), top + 16 * (i // 4)
        color = PALETTE[i % len(PALETTE)]
        body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="12" height="10" fill="{color}"/>')
        body.append(_text(x + 16, y + 9, label, 10, anchor="start"))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(_document(width, height, title, body, note))
