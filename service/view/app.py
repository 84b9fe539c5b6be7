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

Every request is hostile until checked: a path or query that is too long, not UTF-8, holds a control
character or names a date the pages cannot draw gets 400 or 404 with a short page, never 5xx; whatever of a
request is logged has its control characters escaped. The server is wsgiref's, bounded: an idle connection
is closed after `idle_timeout` seconds and at most MAX_CONNECTIONS are served at once, the others waiting
in the listen backlog.
"""

import datetime as dt
import logging
import socket
import sys
import threading
import urllib.parse
from http import HTTPStatus
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from tasks import partition

from .charts import CHARTS

LOG = logging.getLogger("irisflow.web")
MAX_DAYS = 20 * 366  # the longest range one page shows
MAX_PATH, MAX_QUERY, MAX_FIELDS = 1024, 1024, 16  # longer paths and queries, more query fields: 400
# matplotlib draws dates of years 1 to 9999 only and widens a one-day range by two years either side
CHART_DATES = (dt.date(dt.MINYEAR + 2, 1, 1), dt.date(dt.MAXYEAR - 2, 12, 31))
IDLE_TIMEOUT = 15  # seconds an open connection may stay silent (the default of [service] http_idle_timeout)
MAX_CONNECTIONS = 32  # connections served at once, each by a thread of its own
BACKLOG = 128  # connections the kernel holds, unaccepted, while MAX_CONNECTIONS are served
# A served file is read whole into memory; the largest a partition holds is a copy of an input (at most
# [iris] max_source_bytes, 200 MB by default).
MAX_SERVED_BYTES = 1 << 30
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
    """The WSGI application of the daemon's listener: the view's pages and `metrics_app` on /metrics.
    HEAD is answered as GET is, headers and all, without the body."""

    def app(environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "HEAD":
            return _without_body(pages, {**environ, "REQUEST_METHOD": "GET"}, start_response)
        return pages(environ, start_response)

    def pages(environ, start_response):
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if method != "GET":
            return _respond(
                start_response,
                "405 Method Not Allowed",
                b"read-only: GET and HEAD only\n",
                "text/plain; charset=utf-8",
                [("Allow", "GET, HEAD")],
            )
        try:
            path, query = _checked_path(path), _checked_query(environ.get("QUERY_STRING", ""))
            status, (body, content_type, headers) = "200 OK", _route(view, path, query)
        except NotFound:
            status, body, content_type, headers = "404 Not Found", _message(view, "Not found", path), None, []
        except BadRequest as exc:
            status, body, content_type, headers = "400 Bad Request", _message(view, "Bad request", str(exc)), None, []
        except Exception as exc:  # a page that cannot be drawn must not take the listener (and /metrics) down
            LOG.error("partition view: %s failed: %s: %s", _loggable(path), type(exc).__name__, _loggable(str(exc)))
            LOG.debug("partition view: %s failed", _loggable(path), exc_info=True)
            status, body, content_type = (
                "500 Internal Server Error",
                _message(view, "Error", "see the daemon log"),
                None,
            )
            headers = []
        return _respond(start_response, status, body, content_type or "text/html; charset=utf-8", headers)

    return app


def _without_body(app, environ, start_response):
    """HEAD: `app`'s answer to the GET in `environ`, its body only counted (Content-Length)."""
    answer = {}
    result = app(environ, lambda status, headers, exc_info=None: answer.update(status=status, headers=headers))
    try:
        length = sum(len(chunk) for chunk in result)
    finally:
        if hasattr(result, "close"):
            result.close()
    headers = [(name, value) for name, value in answer["headers"] if name.lower() != "content-length"]
    start_response(answer["status"], [*headers, ("Content-Length", str(length))])
    return []


def _loggable(text):
    """`text` with its control characters (line breaks, escape sequences, NUL, ...) and backslashes
    written as Python escapes: what came from a request can never make a log line of its own."""
    return "".join(char if char.isprintable() and char != "\\" else ascii(char)[1:-1] for char in str(text))


def _checked_path(path):
    """PATH_INFO (wsgiref gives the request's bytes as Latin-1 characters) as UTF-8 text, bounded."""
    if len(path) > MAX_PATH:
        raise BadRequest(f"the path is longer than {MAX_PATH} characters")
    try:
        path = path.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise BadRequest("the path is not UTF-8") from None
    if not path.isprintable():
        raise BadRequest("the path holds a control character")
    return path


def _checked_query(text):
    """The query's fields ({name: last value}), bounded and strictly UTF-8."""
    if len(text) > MAX_QUERY:
        raise BadRequest(f"the query is longer than {MAX_QUERY} characters")
    try:
        fields = urllib.parse.parse_qs(
            text.encode("latin-1").decode("ascii"), errors="strict", max_num_fields=MAX_FIELDS
        )
    except UnicodeError:
        raise BadRequest("the query is not percent-encoded UTF-8") from None
    except ValueError:
        raise BadRequest(f"the query has more than {MAX_FIELDS} fields") from None
    return {key: values[-1] for key, values in fields.items()}


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
        start, end = _range(query, view.default_trend_range)
        if start < CHART_DATES[0] or end > CHART_DATES[1]:
            raise BadRequest(f"charts are drawn for dates from {CHART_DATES[0]} to {CHART_DATES[1]}")
        body = view.chart(parts[1].removesuffix(".svg"), start, end)
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
        partition.durable.read_bytes(path, MAX_SERVED_BYTES),
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


class _BoundedServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most MAX_CONNECTIONS at once: the accept loop waits for a free slot,
    so further connections wait in the kernel's listen backlog rather than each getting a thread."""

    daemon_threads = True
    request_queue_size = BACKLOG

    def __init__(self, *args, **kwargs):
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._closing = threading.Event()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        while not self._slots.acquire(timeout=0.5):
            if self._closing.is_set():
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def shutdown(self):
        self._closing.set()
        super().shutdown()

    def handle_error(self, request, client_address):
        """One escaped line in the daemon's log instead of socketserver's traceback on stderr."""
        error = sys.exc_info()[1]
        LOG.error(
            "listener: a request from %s failed: %s: %s", client_address[0], type(error).__name__, _loggable(error)
        )


class _BoundedHandler(WSGIRequestHandler):
    timeout = IDLE_TIMEOUT  # seconds; start_server sets the configured value on a subclass

    def handle(self):
        try:
            super().handle()
        except (TimeoutError, ConnectionError):
            pass  # silent for too long, or gone: the connection is closed without a word

    def send_error(self, code, message=None, explain=None):
        """http.server's own answers to malformed requests, with 400 for the one 5xx it sends by itself
        (505 to a request line claiming HTTP/2 or later, which is the client's mistake)."""
        if code >= 500:
            code, message = HTTPStatus.BAD_REQUEST, "Bad request version"
        super().send_error(code, message, explain)

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        """Requests are logged at DEBUG only (Prometheus alone asks every few seconds), escaped."""
        LOG.debug("%s %s", self.address_string(), _loggable(format % args))


def start_server(address, port, app, idle_timeout=IDLE_TIMEOUT):
    """Serve `app` on address:port (IPv4 or IPv6) from a background thread; returns the server. A
    connection silent for `idle_timeout` seconds is closed."""
    family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]
    server_class = type("Server", (_BoundedServer,), {"address_family": family})
    handler_class = type("Handler", (_BoundedHandler,), {"timeout": idle_timeout})
    server = make_server(address, port, app, server_class=server_class, handler_class=handler_class)
    threading.Thread(target=server.serve_forever, name="irisflow-http", daemon=True).start()
    return server
