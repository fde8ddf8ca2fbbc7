"""TFDS downloads that fail at once when the download host cannot be reached.

TFDS's downloader retries a connection that cannot be made for minutes (its progress
bar at 0/4) before it gives up. Before a download, ``tfds_load`` makes one short
connection attempt to each host of the dataset's URLs (the URLs TFDS ships in its
checksum files), or to the proxy that ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``
choose for them, read the way TFDS's downloader (``requests``) reads them. Nothing is
sent over the connection; a prepared TFDS copy is loaded without any network access.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

TIMEOUT_S = 5.0


def proxy_for(url: str) -> str | None:
    """The proxy ``requests`` (TFDS's downloader) would use for ``url``, or None."""
    from requests.utils import get_environ_proxies, select_proxy

    return select_proxy(url, get_environ_proxies(url))


def endpoint(url: str) -> tuple[str, int, str]:
    """-> (host, port, description) of the first hop towards ``url`` (itself or its proxy)."""
    proxy = proxy_for(url)
    if proxy and "://" not in proxy:
        proxy = f"http://{proxy}"  # requests reads a bare host:port as an HTTP proxy
    target = urlsplit(proxy or url)
    port = target.port or (443 if target.scheme == "https" else 80)
    via = f"{target.hostname}:{port}"  # a proxy's user and password stay out of messages
    if proxy:
        via = f"the proxy {via} (for {urlsplit(url).hostname})"
    return target.hostname, port, via


def connection_error(host: str, port: int, timeout: float = TIMEOUT_S) -> str | None:
    """None if a TCP connection to ``host:port`` opens within ``timeout`` s (name resolution
    included), else why not."""
    outcome: list[str | None] = []

    def attempt():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(err.strerror or str(err) or type(err).__name__)

    # getaddrinfo has no timeout of its own: a stuck resolver is abandoned, not waited for
    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def check_reachable(urls, timeout: float = TIMEOUT_S) -> None:
    """Raise ``ConnectionError`` unless at least one of the hosts of ``urls`` can be reached."""
    failures = []
    hops = {}  # one attempt per host and port (a proxy serves every URL)
    for url in urls:
        host, port, via = endpoint(url)
        hops.setdefault((host, port), via)
    for (host, port), via in hops.items():
        error = connection_error(host, port, timeout)
        if error is None:
            return
        failures.append(f"{via}: {error}")
    if failures:
        raise ConnectionError("cannot reach the download host (" + "; ".join(failures) + ")")


def tfds_load(name: str, **kwargs):
    """``tfds.load(name, **kwargs)``; raises ``ConnectionError`` within seconds when the
    dataset is not prepared yet and none of its download hosts can be reached."""
    import tensorflow_datasets as tfds

    from metagna_tf.data import tfds_cached

    if not tfds_cached(name):
        check_reachable(list(tfds.builder_cls(name).url_infos or ()))
    return tfds.load(name, **kwargs)
