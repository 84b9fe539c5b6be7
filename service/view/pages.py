"""The partition view's pages: the month or year grid, one date, the trends, the charts — rendered from
`Overview` (which reads the disk) through Jinja2 templates that escape every value, with links that point
at the daemon's paths (`ServedLinks`) or at files side by side (`StaticLinks`, for `irisflow report`).
"""

import calendar
import datetime as dt
import urllib.parse
from pathlib import Path

from jinja2 import Environment, PackageLoader

from tasks import partition

from ..process import invoked_as
from .charts import CHARTS
from .overview import STATES, STEP_NAMES, Overview

TREND_DAYS = 90
TEMPLATES = Environment(
    loader=PackageLoader("service.view", "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True
)


def month_range(month):
    """The first and last date of a month given as a date inside it."""
    first = month.replace(day=1)
    return first, first.replace(day=calendar.monthrange(first.year, first.month)[1])


def _day_before(day):
    return day - dt.timedelta(days=1) if day > dt.date.min else None


def _day_after(day):
    return day + dt.timedelta(days=1) if day < dt.date.max else None


class ServedLinks:
    """Where the served pages point: the daemon's paths."""

    paging = True

    @staticmethod
    def home():
        return "/"

    @staticmethod
    def month(first):
        return f"/?month={first:%Y-%m}"

    @staticmethod
    def year(first):
        return f"/?year={first:%Y}"

    @staticmethod
    def date(day):
        return f"/dates/{day}"

    @staticmethod
    def file(kind, day, relative):
        return f"/files/{'failed/' if kind == 'failed' else ''}{day}/{urllib.parse.quote(relative)}"

    @staticmethod
    def champion():
        return "/champion"

    @staticmethod
    def trends(start=None, end=None):
        return "/trends" + (f"?start={start}&end={end}" if start else "")

    @staticmethod
    def chart(name, start, end):
        return f"/charts/{name}.svg?start={start}&end={end}"

    metrics = "/metrics"


class StaticLinks:
    """Where the pages of `report` point: files side by side in one folder, the data where it lies."""

    paging = False
    metrics = None

    def __init__(self, overview):
        self.overview = overview

    @staticmethod
    def home():
        return "index.html"

    @staticmethod
    def date(day):
        return f"{day}.html"

    def file(self, kind, day, relative):
        folder = (partition.partition_dir if kind == "partition" else partition.failed_dir)(self.overview.root, day)
        if partition.is_object(folder):  # no browser opens an object: the page names its s3:// URL
            return str(folder / relative)
        return (folder / relative).resolve().as_uri()

    @staticmethod
    def champion():
        return "champion.html"

    @staticmethod
    def trends(start=None, end=None):
        return "trends.html"

    @staticmethod
    def chart(name, start, end):
        return f"charts/{name}.svg"


class PartitionView:
    """The pages of one output tree; `thresholds` are `[quality]`'s (the drift chart's bands)."""

    def __init__(self, overview, thresholds, links=None):
        self.overview, self.thresholds = overview, thresholds
        self.links = links or ServedLinks()

    def render(self, template, **context):
        return TEMPLATES.get_template(template).render(links=self.links, states=STATES, steps=STEP_NAMES, **context)

    def grid(self, start, end, paging=None):
        rows = self.overview.rows(partition.date_range(start, end))
        return self.render(
            "grid.html", start=start, end=end, rows=rows, counts=self.overview.counts(rows), paging=paging
        )

    def month(self, first):
        first, last = month_range(first)
        year_start = first.replace(month=1)
        paging = {
            "title": f"{first:%B %Y}",
            "prev_month": month_range(before)[0] if (before := _day_before(first)) else None,
            "next_month": _day_after(last),
            "prev_year": _add_years(first, -1),
            "next_year": _add_years(first, 1),
            "month": first,
            "year": year_start,
        }
        return self.grid(first, last, paging)

    def year(self, first):
        first = first.replace(month=1, day=1)
        paging = {
            "title": f"{first:%Y}",
            "prev_year": _add_years(first, -1),
            "next_year": _add_years(first, 1),
            "month": first,
            "year": first,
        }
        return self.grid(first, first.replace(month=12, day=31), paging)

    def date(self, day):
        rerun = f"{invoked_as()} run --date {day.isoformat()}"
        return self.render("date.html", day=day, detail=self.overview.detail(day, rerun))

    def champion(self):
        """The champion and every decision, newest first."""
        from ..champion import current

        ledger = current(self.overview.root)
        return self.render("champion.html", champion=ledger.champion, entries=list(reversed(ledger.entries)))

    def trends(self, start, end):
        return self.render("trends.html", start=start, end=end, charts=CHARTS)

    def chart(self, name, start, end):
        from .charts import trend_chart

        return trend_chart(name, self.overview.trends(partition.date_range(start, end)), self.thresholds)

    def default_trend_range(self):
        end = self.overview.newest_date() or self.overview.states.today()
        return max(dt.date.min, end - dt.timedelta(days=TREND_DAYS - 1)), end

    def default_month(self):
        """The month of the newest date with outputs, else today's."""
        return self.overview.newest_date() or self.overview.states.today()


def _add_years(day, years):
    return (
        day.replace(year=day.year + years, day=min(day.day, 28)) if dt.MINYEAR < day.year + years < dt.MAXYEAR else day
    )


def configured_view(links=None, now=None):
    """The view of the configured output tree (`[iris]`, `[quality]`, `[service]`'s schedule)."""
    from tasks.config import quality

    from ..state import configured

    overview = Overview(configured(now))
    return PartitionView(overview, quality().thresholds(), links(overview) if links else None)


def write_report(start, end, out):
    """The pages of the configured output tree for start..end as static files in `out`; returns the
    number of files written."""
    view = configured_view(StaticLinks)
    out = Path(out)
    (out / "charts").mkdir(parents=True, exist_ok=True)
    dates = partition.date_range(start, end)
    pages = {
        "index.html": view.grid(start, end),
        "trends.html": view.trends(start, end),
        "champion.html": view.champion(),
    }
    pages.update((f"{day}.html", view.date(day)) for day in dates)
    for name, text in pages.items():
        (out / name).write_text(text)
    for name in CHARTS:
        (out / "charts" / f"{name}.svg").write_bytes(view.chart(name, start, end))
    return len(pages) + 3
