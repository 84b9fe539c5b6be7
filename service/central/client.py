"""Luigi's RemoteScheduler over one kept-alive HTTP connection per thread, task states sent in batches.

Through luigid every task state is a synchronous RPC: a date's eleven tasks make about thirty, each of
them on the path of the build, each a round trip to luigid's one thread. Two thirds of them are reports
whose answer Luigi's worker never reads (`add_task`: this task is PENDING, DONE, FAILED); the worker's
next call is always a question (`get_work`). `BatchingRemoteScheduler` holds the reports and sends them
with that question in one request to irisflow's luigid (`batch_calls`, `service.luigid`), which answers
them in order, so luigid sees exactly the calls and order Luigi's worker made. Against a luigid without
`batch_calls` (Luigi's own) it finds out on the first try and sends each call alone, as Luigi does.
`ReportingWorker` sends what is still held when a worker ends (a phased-out worker asks nothing more).

Luigi's own fetcher goes through a `requests` session when requests is installed (its machinery costs
more CPU per call than luigid takes to answer) and otherwise through urllib, a new connection per call;
`http.client` on a kept-alive connection does the same POST for a fraction of either, and irisflow does
not need requests at all. Luigi's retries (`[core] rpc_retry_attempts`, `rpc_retry_wait`) and its errors
are unchanged.

`unreachable_scheduler` asks, before a build or an assistant worker starts, whether the configured luigid
accepts connections at all, so a dead luigid is one clear error rather than Luigi's retries per task.
"""

import base64
import http.client
import json
import logging
import os
import socket
import threading
import time
import urllib.parse

import luigi.rpc
import luigi.worker

from ..config import scheduler_url

LOG = logging.getLogger(__name__)
CONNECT_TIMEOUT_SECONDS = 5  # how long a central scheduler may take to accept connections (a restart)
CONNECT_RETRY_SECONDS = 0.25

# A kept-alive connection luigid closed meanwhile (idle timeout, restart) fails on first use with one
# of these; the request is then sent once more on a new connection before Luigi's retries take over.
STALE_CONNECTION = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


# RPCs whose answer Luigi's worker ignores: held, and sent with the next call that needs an answer.
REPORTS = frozenset({"add_task", "add_worker"})
BATCH_METHOD = "batch_calls"


class SchedulerHTTPError(OSError):
    """luigid answered with an HTTP error status."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class KeepAliveFetcher(luigi.rpc._FetcherInterface):  # noqa: SLF001 - Luigi's fetcher interface
    """POSTs Luigi's RPC bodies over a kept-alive HTTP(S) connection per thread (Luigi's worker pings from
    a thread of its own), made again after a fork or a lost connection."""

    raises = (OSError, http.client.HTTPException)

    def __init__(self):
        self._local = threading.local()

    def fetch(self, full_url, body, timeout):
        url = urllib.parse.urlsplit(full_url)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if url.username:
            credentials = f"{urllib.parse.unquote(url.username)}:{urllib.parse.unquote(url.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        path = url.path + (f"?{url.query}" if url.query else "")
        data = urllib.parse.urlencode(body).encode()
        for attempt in (1, 2):
            connection = self._connection(url, timeout)
            try:
                connection.request("POST", path, data, headers)
                response = connection.getresponse()
                text = response.read().decode("utf-8")
            except STALE_CONNECTION:
                self.close()
                if attempt == 2:
                    raise
                continue
            except BaseException:
                self.close()
                raise
            if response.status >= 400:
                raise SchedulerHTTPError(
                    response.status, f"{response.status} {response.reason} from {url.scheme}://{url.netloc}{path}"
                )
            return text
        raise AssertionError("unreachable")

    def _connection(self, url, timeout):
        """This thread's connection to the URL's server: made on first use, and again in a forked child
        (which must not share its parent's socket) or for another server."""
        key = (os.getpid(), url.scheme, url.hostname, url.port)
        if getattr(self._local, "key", None) != key:
            kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
            self._local.connection, self._local.key = kind(url.hostname, url.port, timeout=timeout), key
        return self._local.connection

    def close(self):
        """Close this thread's connection; the next request makes a new one."""
        connection = getattr(self._local, "connection", None)
        if connection is not None and self._local.key[0] == os.getpid():
            connection.close()
        self._local.connection = self._local.key = None


class BatchingRemoteScheduler(luigi.rpc.RemoteScheduler):
    """Luigi's RemoteScheduler that holds a thread's reports (REPORTS) until its next question, then sends
    them and the question as one `batch_calls` request; each call alone if luigid has no `batch_calls`."""

    def __init__(self, url, connect_timeout=None):
        super().__init__(url, connect_timeout)
        self._local = threading.local()
        self._batches = None  # whether luigid answers batch_calls: unknown until the first batch

    def _request(self, url, data, attempts=3, allow_null=True):
        method = url.rsplit("/", 1)[-1]
        held = self._held()
        if method in REPORTS and self._batches is not False:
            held.append([method, data])
            return None
        if not held:
            return super()._request(url, data, attempts, allow_null)
        calls = [*held, [method, data]]
        held.clear()
        answer = self._send(calls)[-1]
        if answer is None and not allow_null:  # Luigi asks again for an answer it must have
            return super()._request(url, data, attempts, allow_null)
        return answer

    def flush(self):
        """Send the reports this thread still holds."""
        held = self._held()
        if held:
            calls = held[:]
            held.clear()
            self._send(calls)

    def _held(self):
        """This thread's held reports; none in a forked child, whose parent sends its own."""
        if getattr(self._local, "pid", None) != os.getpid():
            self._local.pid, self._local.calls = os.getpid(), []
        return self._local.calls

    def _send(self, calls):
        """Each call's answer, in order: in one request when luigid takes batches."""
        path = f"/api/{BATCH_METHOD}"
        if self._batches is None:  # asked once, without Luigi's retries: a 404 is an answer
            try:
                page = self._fetcher.fetch(
                    luigi.rpc._urljoin(self._url, path), {"data": json.dumps({"calls": calls})}, self._connect_timeout
                )
                self._batches = True
                return json.loads(page)["response"]
            except SchedulerHTTPError as exc:
                if exc.status != 404:
                    raise luigi.rpc.RPCError(
                        f"the central scheduler {self._url} refused a batch of calls", exc
                    ) from exc
                self._batches = False
            except self._fetcher.raises:  # not reachable now: each call alone, through Luigi's retries
                pass
        if self._batches:
            return super()._request(path, {"calls": calls})
        return [super(BatchingRemoteScheduler, self)._request(f"/api/{method}", data) for method, data in calls]


class ReportingWorker(luigi.worker.Worker):
    """Luigi's worker that sends the reports its scheduler still holds when it ends: the last task's
    DONE of a worker phasing out, which asks luigid nothing more."""

    def __exit__(self, *exc_info):
        flush = getattr(self._scheduler, "flush", None)
        if flush is not None:
            try:
                flush()
            except luigi.rpc.RPCError as exc:  # luigid gone: it prunes this worker's tasks in time
                LOG.warning("could not send the last task states to the central scheduler: %s", exc)
        return super().__exit__(*exc_info)


def remote_scheduler(url, attempts=None):
    """Luigi's RemoteScheduler for `url` with the kept-alive fetcher and batched reports (Luigi's own
    scheduler client for a Unix socket); `attempts` overrides `[core] rpc_retry_attempts` (1: a question
    that is not worth waiting for)."""
    batching = urllib.parse.urlsplit(url).scheme in ("http", "https")
    scheduler = BatchingRemoteScheduler(url) if batching else luigi.rpc.RemoteScheduler(url)
    if attempts is not None:
        scheduler._rpc_retry_attempts = attempts  # noqa: SLF001 - set from config in __init__, read per call
    if batching:
        scheduler._fetcher = KeepAliveFetcher()  # noqa: SLF001 - the fetcher is the transport seam
    return scheduler


def unreachable_scheduler():
    """An RPCError when the configured central scheduler does not accept connections, else None.

    Asked before the build, so a dead luigid costs one clear error per date instead of Luigi's
    retries and a traceback for every task.
    """
    url = scheduler_url()
    address = urllib.parse.urlsplit(url)
    if address.scheme not in ("http", "https"):
        return None
    deadline = time.monotonic() + CONNECT_TIMEOUT_SECONDS
    while True:  # asked again for a few seconds: luigid being restarted fails no date
        try:
            socket.create_connection((address.hostname, address.port or 80), timeout=CONNECT_TIMEOUT_SECONDS).close()
            return None
        except OSError as exc:
            if time.monotonic() + CONNECT_RETRY_SECONDS < deadline:
                time.sleep(CONNECT_RETRY_SECONDS)
                continue
            return luigi.rpc.RPCError(
                f"central scheduler {url} not reachable ({exc.strerror or exc}); start luigid "
                "or remove [core] default_scheduler_host to use the local scheduler",
                exc,
            )
