"""The partition view: read-only pages over the output tree, served by the daemon beside /metrics on one
listener, or written as static files by `irisflow report`.

    overview.py  what the pages show, read from the output tree (states from service.state)
    pages.py     the pages, rendered from Jinja2 templates (templates/) that escape every value
    charts.py    the trend charts, SVG drawn by matplotlib
    app.py       the WSGI app and the listener
"""

from .app import make_app, start_server
from .pages import configured_view, write_report

__all__ = ["configured_view", "make_app", "start_server", "write_report"]
