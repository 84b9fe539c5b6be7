"""The partition view's trend charts as SVG, drawn on the server by matplotlib (no browser library, no CDN).

matplotlib is imported only here, when a chart is asked for, and only its object-oriented API is used
(no pyplot state), so the daemon's request threads can draw at once. Text is drawn as paths, so no
string from the data reaches the SVG as markup.
"""

import io

WIDTH, HEIGHT, DPI = 9.0, 3.0, 100


def line_chart(dates, series, title, ylabel, *, bands=(), bars=False):
    """An SVG (bytes) of `series` ({label: [value or None per date]}) over `dates`; `bands`: (y, label)
    reference lines; `bars` draws one bar series instead of lines."""
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI, layout="constrained")
    FigureCanvasSVG(figure)
    axes = figure.add_subplot()
    for label, values in sorted(series.items()):
        points = [(day, value) for day, value in zip(dates, values, strict=True) if value is not None]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        if bars:
            axes.bar(xs, ys, width=1.0, label=label, color="#c0392b")
        else:
            axes.plot(xs, ys, marker="." if len(xs) < 60 else None, linewidth=1.2, label=label)
    for value, label in bands:
        axes.axhline(value, linestyle="--", linewidth=0.8, color="#888888")
        axes.annotate(
            label, (1, value), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=7, color="#666666"
        )
    axes.set_title(title, fontsize=10, loc="left")
    axes.set_ylabel(ylabel, fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
    if dates:
        axes.set_xlim(dates[0], dates[-1])
    if not any(value is not None for values in series.values() for value in values):
        axes.text(0.5, 0.5, "no data in this range", transform=axes.transAxes, ha="center", color="#888888")
    elif len(series) > 1 or not bars:
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.autofmt_xdate()
    out = io.BytesIO()
    figure.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()


CHARTS = ("accuracy", "rejected", "drift")


def trend_chart(name, trends, thresholds):
    """One of the CHARTS, as SVG bytes, from `Overview.trends` data and the `[quality]` thresholds."""
    dates = trends["dates"]
    if name == "accuracy":
        return line_chart(dates, trends["accuracy"], "Test accuracy per model", "accuracy")
    if name == "rejected":
        return line_chart(
            dates, {"rows rejected": trends["rejected"]}, "Rows rejected by validation", "rows", bars=True
        )
    return line_chart(
        dates,
        trends["psi"],
        "Feature drift (PSI against the reference)",
        "PSI",
        bands=((thresholds["psi_moderate"], "moderate"), (thresholds["psi_significant"], "significant")),
    )
