"""A TFDS download host that cannot be reached is reported in seconds, not after minutes of
retries. The network is made unreachable here: name resolution fails (or hangs) for every
host but the loopback one, and proxies point at 127.0.0.1; nothing leaves the machine."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from metagna_tf.data.download import check_reachable
from tests.app_server import free_port

URLS = ["https://github.com/brendenlake/omniglot/raw/master/python/images_background.zip",
        "https://github.com/brendenlake/omniglot/raw/master/python/images_evaluation.zip"]
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
              "all_proxy", "NO_PROXY", "no_proxy")
LOOPBACK = ("127.0.0.1", "localhost")


@pytest.fixture
def resolver(monkeypatch):
    """Name resolution as on a machine without network; yields the names asked for."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    asked = []
    real = socket.getaddrinfo

    def offline(host, *args, **kwargs):
        asked.append(host)
        if host in LOOPBACK:
            return real(host, *args, **kwargs)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    return asked


def test_an_unresolvable_host_is_reported_at_once(resolver):
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=r"cannot reach the download host \(github.com:443: "
                                              r"Temporary failure in name resolution\)"):
        check_reachable(URLS)
    assert time.monotonic() - start < 2
    assert resolver == ["github.com"]  # one attempt for the two URLs of the same host


def test_a_hanging_resolver_is_abandoned_after_the_timeout(resolver, monkeypatch):
    release = threading.Event()

    def stuck(host, *args, **kwargs):
        release.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", stuck)
    start = time.monotonic()
    try:
        with pytest.raises(ConnectionError, match=r"github.com:443: no answer within 0.5 s"):
            check_reachable(URLS, timeout=0.5)
        assert time.monotonic() - start < 2
    finally:
        release.set()


def test_the_proxy_is_what_is_tried_as_tfds_would(resolver, monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:secret@127.0.0.1:{port}")
    with pytest.raises(ConnectionError) as caught:
        check_reachable([*URLS, "https://drive.google.com/uc?id=1"])
    assert str(caught.value) == (f"cannot reach the download host (the proxy 127.0.0.1:{port} "
                                 "(for github.com): Connection refused)")
    assert resolver == ["127.0.0.1"]  # one attempt; the hosts themselves are the proxy's

    monkeypatch.setenv("NO_PROXY", "github.com")  # the proxy is bypassed for this host
    with pytest.raises(ConnectionError, match="github.com:443: Temporary failure"):
        check_reachable(URLS)


def test_a_reachable_proxy_lets_the_download_go_ahead(resolver, monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as listening:
        monkeypatch.setenv("https_proxy", f"127.0.0.1:{listening.getsockname()[1]}")
        check_reachable(URLS)  # no error: TFDS takes it from here
    assert resolver == ["127.0.0.1"]


def test_one_reachable_host_is_enough(resolver, monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as listening:
        local = f"http://127.0.0.1:{listening.getsockname()[1]}/mirror.zip"
        check_reachable([URLS[0], local])
    assert resolver == ["github.com", "127.0.0.1"]


def test_tfds_load_checks_the_host_only_when_it_would_download(resolver, monkeypatch):
    import tensorflow_datasets as tfds

    from metagna_tf import data
    from metagna_tf.data.download import tfds_load

    loaded = []
    monkeypatch.setattr(tfds, "load", lambda name, **kwargs: loaded.append(name) or "dataset")
    monkeypatch.setattr(data, "tfds_cached", lambda name: True)
    assert tfds_load("omniglot", split="train") == "dataset"  # prepared: no network at all
    assert resolver == [] and loaded == ["omniglot"]

    monkeypatch.setattr(data, "tfds_cached", lambda name: False)
    with pytest.raises(ConnectionError, match="github.com:443"):  # TFDS's own omniglot URLs
        tfds_load("omniglot", split="train")
    assert resolver == ["github.com"] and loaded == ["omniglot"]  # TFDS was not asked
