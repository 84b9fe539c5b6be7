"""The daemon's listener: the partition view's pages and /metrics on one WSGI app, in a bounded server.

    /                      dates x steps, coloured by state, with counts; ?month=YYYY-MM, ?year=YYYY or
                           ?start=D&end=D choose the dates (default: the month of today's date)
    /dates/YYYY-MM-DD      one date: validation report with sample rows, models, drift, failure, files
    /champion              the champion and the timeline of every decision
    /trends?start=D&end=D  accuracy per model, rows rejected and drift over a range (default 90 days)
    /charts/NAME.svg       the trend charts (matplotlib, drawn here)
    /files/[failed/]D/PATH a file of the date's partition or failure record, as it is on disk
    /metrics               Prometheus (prometheus_client's WSGI app)

Only GET and HEAD are answered. Files are served as plain text or as downloads, never as HTML.
"""

import logging
import socket
import threading
import urllib.parse
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from tasks import partition

from .charts import CHARTS

LOG = logging.getLogger("irisflow.web")
MAX_DAYS = 20 * 366  # the longest range one page shows
TEXT_TYPES = {".json": "application/json", ".csv": "text/csv", ".txt": "text/plain"}
SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]


class NotFound(Exception):
    pass


class BadRequest(ValueError):
    pass


def _date(text, what="date"):
    try:
        return partition.parse_date(text)
    except ValueError as exc:
        raise BadRequest(f"{what}: {exc}") from None


def _range(query, default):
    start, end = query.get("start"), query.get("end")
    if not start and not end:
        return default()
    start, end = _date(start or end, "start"), _date(end or start, "end")
    if start > end or (end - start).days >= MAX_DAYS:
        raise BadRequest(f"start {start} must not be after end {end}, and at most {MAX_DAYS} days before it")
    return start, end


def make_app(view, metrics_app):
    """The WSGI application of the daemon's listener: the view's pages and `metrics_app` on /metrics."""

    def app(environ, start_response):
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if method not in ("GET", "HEAD"):
            return _respond(
                start_response,
                "405 Method Not Allowed",
                b"read-only: GET and HEAD only\n",
                "text/plain; charset=utf-8",
                [("Allow", "GET, HEAD")],
            )
        query = {key: values[-1] for key, values in urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).items()}
        try:
            status, (body, content_type, headers) = "200 OK", _route(view, path, query)
        except NotFound:
            status, body, content_type, headers = "404 Not Found", _message(view, "Not found", path), None, []
        except BadRequest as exc:
            status, body, content_type, headers = "400 Bad Request", _message(view, "Bad request", str(exc)), None, []
        except Exception:  # a page that cannot be drawn must not take the listener (and /metrics) down
            LOG.exception("partition view: %s failed", path)
            status, body, content_type = (
                "500 Internal Server Error",
                _message(view, "Error", "see the daemon log"),
                None,
            )
            headers = []
        return _respond(
            start_response,
            status,
            b"" if method == "HEAD" else body,
            content_type or "text/html; charset=utf-8",
            headers,
        )

    return app


def _route(view, path, query):
    """(body, content type or None for HTML, extra headers) of a GET."""
    parts = path.strip("/").split("/")
    if path == "/":
        if query.get("month"):
            return _html(view.month(_date(query["month"] + "-01", "month")))
        if query.get("year"):
            return _html(view.year(_date(query["year"] + "-01-01", "year")))
        if query.get("start") or query.get("end"):
            return _html(view.grid(*_range(query, None)))
        return _html(view.month(view.default_month()))
    if parts[0] == "dates" and len(parts) == 2:
        return _html(view.date(_existing_date(parts[1])))
    if path == "/champion":
        return _html(view.champion())
    if path == "/trends":
        return _html(view.trends(*_range(query, view.default_trend_range)))
    if parts[0] == "charts" and len(parts) == 2 and parts[1].removesuffix(".svg") in CHARTS:
        body = view.chart(parts[1].removesuffix(".svg"), *_range(query, view.default_trend_range))
        return body, "image/svg+xml", []
    if parts[0] == "files" and len(parts) >= 3:
        kind = "failed" if parts[1] == "failed" else "partition"
        rest = parts[2:] if kind == "failed" else parts[1:]
        if len(rest) < 2:
            raise NotFound(path)
        found = view.overview.file_path(kind, _existing_date(rest[0]), "/".join(rest[1:]))
        if found is None:
            raise NotFound(path)
        return _file(found)
    raise NotFound(path)


def _existing_date(text):
    try:
        return partition.parse_date(text)
    except ValueError:
        raise NotFound(text) from None


def _html(text):
    return text.encode(), None, []


def _file(path):
    content_type = TEXT_TYPES.get(path.suffix)
    headers = [] if content_type else [("Content-Disposition", f'attachment; filename="{path.name}"')]
    return (
        path.read_bytes(),
        (f"{content_type}; charset=utf-8" if content_type else "application/octet-stream"),
        headers,
    )


def _message(view, title, text):
    return view.render("message.html", title=title, text=text).encode()


def _respond(start_response, status, body, content_type, headers):
    start_response(
        status, [("Content-Type", content_type), ("Content-Length", str(len(body))), *SECURITY_HEADERS, *headers]
    )
    return [body]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        """Requests are not logged: Prometheus alone asks every few seconds."""


def start_server(address, port, app):
    """Serve `app` on address:port (IPv4 or IPv6) from a background thread; returns the server."""
    family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]
    server_class = type("Server", (_ThreadingServer,), {"address_family": family})
    server = make_server(address, port, app, server_class=server_class, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="irisflow-http", daemon=True).start()
    return server
