"""The daemon's listener against hostile requests, over raw sockets so that any byte reaches it: it never
answers 5xx, HEAD gives GET's headers, idle connections are closed and do not each keep a thread, and
nothing from a request reaches the daemon's log unescaped."""
import datetime as dt
import re
import socket
import time
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import free_port, poll, scrape, stop, write_input
from service.runner import run_dates
from service.view.app import MAX_CONNECTIONS

pytestmark = pytest.mark.slow

BUILT = dt.date(2026, 2, 1)
IDLE = 2  # seconds: [service] http_idle_timeout of these daemons
FORGED = "FORGED irisflow.daemon: "  # what a request would write at the start of a log line of its own
CHECKS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Listener:
    def __init__(self, daemon, port, log):
        self.daemon, self.port, self.log = daemon, port, log

    def raw(self, data, timeout=30):
        """The status of the answer to `data` sent as it is (None when the listener closed the connection
        without one), and the whole answer."""
        answer = b""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except OSError:  # the listener answered (or closed) before the whole request was sent
                pass
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except ConnectionResetError:  # it closed with some of a long request unread
                pass
        # http.server answers a request line it cannot take with no status line, as to HTTP/0.9: its page says
        match = re.match(rb"HTTP/\d\.\d (\d{3}) ", answer) or re.search(rb"<p>Error code: (\d{3})</p>", answer)
        return (int(match[1]) if match else None), answer

    def request(self, method, target, headers=()):
        lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", *headers, b"", b""]
        return self.raw(b"\r\n".join(lines))

    def get(self, target, method=b"GET"):
        """(status, headers as a dict, body) of a well-formed request for `target` (a str)."""
        _, answer = self.request(method, target.encode())
        head, _, body = answer.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        return int(status.split()[1]), dict(line.split(": ", 1) for line in lines), body

    def threads(self):
        status = Path(f"/proc/{self.daemon.pid}/status").read_text()
        return int(re.search(r"^Threads:\s+(\d+)", status, re.M)[1])

    def assert_log_clean(self):
        """Every request below carries FORGED after a line break; none may start a line of the log, and no
        control character from a request may reach it."""
        text = self.log.read_text(encoding="utf-8", errors="surrogateescape")
        assert not [line for line in text.splitlines() if line.startswith(FORGED.split()[0])]
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\x85\u2028\u2029]", text), text[-2000:]
        assert not re.search(r"Traceback|partition view:|listener:", text), text[-2000:]


@pytest.fixture
def listener(irisflow_config, start_daemon, tmp_path):
    """A daemon with one built date, its listener on a free port, idle connections closed after IDLE s."""
    incoming = tmp_path / "in"
    irisflow_config.set("iris", source=str(incoming / "{date}.csv"), models='["knn"]')
    write_input(incoming, BUILT)
    run_dates([BUILT])
    port = free_port()
    irisflow_config.set(
        "service", metrics_port=port, catchup_days=1, schedule="0 2 1 1 *", http_idle_timeout=f"{IDLE} seconds"
    )
    daemon = start_daemon()
    log = tmp_path / "daemon.err"
    poll("the daemon's /metrics", lambda: scrape(port) or daemon.poll() is not None, timeout=60)
    assert daemon.poll() is None, log.read_text()
    yield Listener(daemon, port, log)
    assert daemon.poll() is None, log.read_text()[-2000:]  # still serving after all that was thrown at it
    stop(daemon)  # its exit status is another test's concern (a SIGTERM during the start-up pass may exit 1)


# -- what a hostile client sends ------------------------------------------------------------------------
BYTE = st.integers(0, 255).map(lambda b: bytes([b]))
ANY_BYTES = st.lists(BYTE, max_size=40).map(b"".join)
WEIRD = st.sampled_from(
    [b"\x00", b"\r", b"\n", b"\x1b[31m", b"%00", b"%0a" + FORGED.encode(), b"%zz", b"%", b"%c3%28", b"\xc3\x28",
     b"\xff", b"..", b"/", b"//", b"%2e%2e", b"%2f", b"?", b"#", b"\xe2\x80\xa8", b"%e2%80%a8", b" ", b"\t"]
)
PIECE = st.one_of(WEIRD, ANY_BYTES, st.text(max_size=12).map(lambda t: urllib.parse.quote(t).encode()))
PREFIX = st.sampled_from(
    [b"/", b"/dates/", b"/files/", f"/files/{BUILT}/".encode(), f"/files/failed/{BUILT}/".encode(), b"/charts/",
     b"/charts/accuracy.svg", b"/trends", b"/metrics", b"", b"*", b"http://x/"]
)
PATH = st.builds(lambda prefix, pieces: prefix + b"".join(pieces), PREFIX, st.lists(PIECE, max_size=6))
EDGE_DAY = st.one_of(
    st.dates(max_value=dt.date(3, 12, 31)), st.dates(min_value=dt.date(9997, 1, 1))
).map(lambda d: d.isoformat())
DAY = st.one_of(
    st.dates().map(lambda d: d.isoformat()),
    EDGE_DAY,
    st.sampled_from(["0000-01-01", "10000-01-01", "2026-02-30", "2026-13-01", "-001-01-01", "2026-02-01\x00",
                     "２０２６-02-01"]),
    st.text(max_size=12),
)
MONTH = st.one_of(
    st.builds(lambda y, m: f"{y:04d}-{m:02d}", st.integers(-2, 10001), st.integers(-1, 13)),
    st.sampled_from(["0001-01", "9999-12", "0000-12", "10000-01", "2026-1", "2026-01-"]),
    st.text(max_size=10),
)
YEAR = st.one_of(st.integers(-2, 10001).map(str), st.sampled_from(["0001", "9999", "0000", "10000", "1e3"]),
                 st.text(max_size=6))
FIELD = st.one_of(
    st.tuples(st.just("month"), MONTH), st.tuples(st.just("year"), YEAR),
    st.tuples(st.sampled_from(["start", "end"]), DAY), st.tuples(st.text(max_size=8), st.text(max_size=8)),
)
QUERY = st.one_of(
    st.lists(FIELD, max_size=4).map(lambda fields: urllib.parse.urlencode(fields).encode()),
    EDGE_DAY.map(lambda day: f"start={day}&end={day}".encode()),  # one day: matplotlib widens it by two years
    st.lists(st.one_of(WEIRD, ANY_BYTES, st.sampled_from([b"=", b"&", b";", b"month=", b"start="])), max_size=8)
    .map(b"".join),
)
QUERY_PATH = st.sampled_from([b"/", b"/trends", b"/charts/accuracy.svg", b"/charts/drift.svg", b"/metrics"])
METHOD = st.one_of(
    st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE", b"CONNECT", b"PRI",
                     b"get", b""]),
    st.lists(BYTE, min_size=1, max_size=10).map(b"".join),
)
VERSION = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/9.9", b"HTTP/1", b"", b"FTP/1.0",
                           b"HTTP/1.1 x"])
HEADER_NAME = st.one_of(
    st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding", b"Expect", b"Connection", b"Range",
                     b"Accept-Encoding", b"If-Modified-Since", b"Cookie", b"X-" + FORGED.encode().strip()]),
    ANY_BYTES,
)
HEADER_VALUE = st.one_of(
    st.sampled_from([b"chunked", b"gzip", b"100-continue", b"-1", b"99999999999999999999", b"bytes=0-0",
                     b"keep-alive", b"\n" + FORGED.encode(), b"x" * 70000]),
    ANY_BYTES,
)
HEADERS = st.lists(st.tuples(HEADER_NAME, HEADER_VALUE).map(lambda h: h[0] + b": " + h[1]), max_size=6)


def test_no_request_gets_a_5xx_and_nothing_of_it_reaches_the_log_unescaped(listener):
    @CHECKS
    @given(path=PATH)
    def paths(path):
        for method in (b"GET", b"HEAD"):
            status, _ = listener.request(method, path + b"%0a" + FORGED.encode().replace(b" ", b"%20"))
            assert status is None or status < 500, path
            status, _ = listener.request(method, path)
            assert status is None or status < 500, path

    @CHECKS
    @given(path=QUERY_PATH, query=QUERY)
    def queries(path, query):
        status, _ = listener.request(b"GET", path + b"?" + query)
        assert status is None or status < 500, query

    @CHECKS
    @given(method=METHOD, path=st.one_of(PATH, st.just(b"/")), version=VERSION, headers=HEADERS)
    def requests(method, path, version, headers):
        lines = [method + b" " + path + b" " + version, *headers, b"X-Forged: \n" + FORGED.encode(), b"", b""]
        status, _ = listener.raw(b"\r\n".join(lines))
        assert status is None or status < 500, lines

    @CHECKS
    @given(data=st.lists(st.one_of(WEIRD, ANY_BYTES, st.sampled_from([b"\r\n", b"GET / HTTP/1.1", b": "])), max_size=12))
    def garbage(data):
        status, _ = listener.raw(b"".join(data))
        assert status is None or status < 500, data

    for check in (paths, queries, requests, garbage):
        check()
        assert scrape(listener.port), f"/metrics no longer answers after {check.__name__}"
    listener.assert_log_clean()


EDGES = [f"/files/{BUILT}/summary.json%00", f"/files/{BUILT}/%00", f"/files/{BUILT}%00/summary.json",
     f"/files/failed/{BUILT}/a%00b", "/files/%00/%00", "/?month=0001-01", "/?month=9999-12", "/?year=9999",
     "/?year=0001", "/?month=0000-12", "/?month=10000-01", "/?year=0", "/?start=0001-01-01&end=0001-01-01",
     "/?start=9999-12-31", "/trends?start=9999-12-31&end=9999-12-31", "/trends?start=0001-01-01",
     "/charts/accuracy.svg?start=9999-12-31&end=9999-12-31", "/charts/drift.svg?start=0001-01-01&end=0001-01-01",
     "/charts/rejected.svg?start=0002-06-01", "/dates/9999-12-31", "/dates/0001-01-01", "/dates/0000-01-01",
     "/?month=2026-02%00", "/?month=%ff", "/?start=%c3%28", "/%ff", "/dates/%e9", "/" + "a" * 5000,
     "/?start=" + "1" * 5000, "/?" + "&".join(["a=1"] * 2000)]


def test_edges_of_the_calendar_and_bad_bytes_get_4xx_or_a_page(listener):
    answers = {target: listener.get(target) for target in EDGES}
    assert {target: status for target, (status, _, _) in answers.items() if status not in (200, 400, 404)} == {}
    for status, headers, body in answers.values():
        assert int(headers["Content-Length"]) == len(body) and (status == 200 or len(body) < 4000)
    assert answers["/?month=0001-01"][0] == answers["/?year=9999"][0] == 200  # the calendar's edges are pages
    assert answers["/?month=0000-12"][0] == answers["/?start=%c3%28"][0] == answers["/" + "a" * 5000][0] == 400
    assert listener.raw(b"GET / HTTP/2.0\r\n\r\n")[0] == 400  # http.server's own answer would be 505
    listener.assert_log_clean()


def test_nul_in_a_file_path_is_a_bad_request_and_the_file_itself_is_served(listener):
    assert listener.get(f"/files/{BUILT}/summary.json")[0] == 200
    for nul in (f"/files/{BUILT}/summary.json%00", f"/files/{BUILT}/summary.json%00.txt", f"/files/{BUILT}\0/x"):
        status, _, body = listener.get(nul)
        assert status == 400 and b"control character" in body


def test_head_gives_gets_headers_without_a_body(listener):
    for target in ("/", f"/dates/{BUILT}", f"/files/{BUILT}/summary.json", "/nowhere", "/?month=x", "/metrics"):
        get_status, get_headers, body = listener.get(target)
        head_status, head_headers, head_body = listener.get(target, method=b"HEAD")
        assert head_body == b"" and head_status == get_status, target
        assert head_headers["Content-Type"] == get_headers["Content-Type"], target
        if target != "/metrics":  # the metrics themselves change between two scrapes
            assert head_headers["Content-Length"] == get_headers["Content-Length"] == str(len(body)) != "0", target
        else:
            assert int(head_headers["Content-Length"]) > 0


def test_idle_connections_are_closed_and_do_not_each_keep_a_thread(listener):
    def settled():
        first = listener.threads()
        time.sleep(0.5)
        return first if listener.threads() == first else None

    slack = 5  # threads the daemon may start of its own meanwhile (the scheduler's executor)
    before = poll("the daemon's thread count to settle", settled, timeout=30)
    idle = [socket.create_connection(("127.0.0.1", listener.port), timeout=60) for _ in range(60)]
    try:
        time.sleep(1)
        during = listener.threads()
        assert during - before <= MAX_CONNECTIONS + slack < len(idle), (before, during)
        started = time.monotonic()
        for sock in idle:  # each is closed by the listener: at most IDLE s each, MAX_CONNECTIONS at a time
            assert sock.recv(1) == b""
        assert time.monotonic() - started < 60 / MAX_CONNECTIONS * IDLE + 10
    finally:
        for sock in idle:
            sock.close()
    assert scrape(listener.port)
    poll("the request threads to end", lambda: listener.threads() <= before + slack, timeout=10)
    listener.assert_log_clean()


def test_an_idle_timeout_of_zero_is_refused(irisflow_config, start_daemon, tmp_path):
    irisflow_config.set("service", metrics_port=free_port(), http_idle_timeout="0 seconds")
    assert start_daemon().wait(timeout=60) == 2
    assert "luigi.cfg [service] http_idle_timeout: must be more than 0 seconds" in (tmp_path / "daemon.err").read_text()
