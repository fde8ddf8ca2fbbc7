"""The launched app through ``gradio_client``: adapt, classify, sessions kept apart, bad uploads."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.app_server import running_app

pytestmark = pytest.mark.slow
MAX_CLASSES = 10


@pytest.fixture(scope="module")
def app_url(trained_workdir):
    with running_app("--workdir", trained_workdir) as url:
        yield url


def adapt_args(names, folders):
    files = [[handle_file(str(p)) for p in sorted(Path(f).iterdir())] for f in folders]
    pad = MAX_CLASSES - len(names)
    return [len(names), *names, *[""] * pad, *files, *[None] * pad]


def rows_of(table):
    return table["data"] if isinstance(table, dict) else table


def test_adapt_and_classify_held_out_images(app_url, support_and_queries):
    support_dir, queries, truth = support_and_queries
    folders = sorted(support_dir.iterdir())
    names = [f.name for f in folders]
    client = Client(app_url, verbose=False)
    losses, scales, summary = client.predict(*adapt_args(names, folders), api_name="/adapt")
    trace = [row[1] for row in losses["data"]]
    assert len(trace) == 4 and trace[-1] < trace[0]  # adaptation lowered the support loss
    assert {row[0] for row in scales["data"]} == {1, 2, 3} and len(scales["data"]) == 3 * 14
    assert "Adapted to **5 classes** (25 images)" in summary
    gallery, table, first = client.predict([handle_file(str(q)) for q in queries], None,
                                           api_name="/classify")
    rows = rows_of(table)
    assert len(rows) == len(gallery) == len(queries)
    predicted = [row[1].rsplit(" (", 1)[0] for row in rows]
    assert set(predicted) <= set(names)
    assert sum(p == t for p, t in zip(predicted, truth, strict=True)) >= 0.6 * len(truth)
    assert first["label"] == predicted[0]


def test_two_sessions_at_once_keep_their_own_classes(app_url, support_and_queries):
    support_dir, queries, _ = support_and_queries
    folders = sorted(support_dir.iterdir())
    sessions = {"a": (["alpha", "beta", "gamma"], folders[:3]),
                "b": (["one", "two", "three", "four"], folders[1:5])}
    clients = {k: Client(app_url, verbose=False) for k in sessions}
    results, errors = {}, []

    def work(key):
        try:
            names, chosen = sessions[key]
            clients[key].predict(*adapt_args(names, chosen), api_name="/adapt")
            results[key] = clients[key].predict([handle_file(str(q)) for q in queries[:6]], None,
                                                api_name="/classify")
        except Exception as err:  # noqa: BLE001 - reported below with the session's name
            errors.append((key, err))

    threads = [threading.Thread(target=work, args=(k,)) for k in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    for key, (names, _) in sessions.items():
        labels = {row[1].rsplit(" (", 1)[0] for row in rows_of(results[key][1])}
        assert labels <= set(names), (key, labels)
    assert set(results["a"][2]["confidences"][i]["label"] for i in range(3)) <= {"alpha", "beta",
                                                                                    "gamma"}


def test_bad_upload_gives_its_message_and_the_session_goes_on(app_url, support_and_queries,
                                                              tmp_path):
    support_dir, queries, _ = support_and_queries
    folders = sorted(support_dir.iterdir())
    names = [f.name for f in folders]
    client = Client(app_url, verbose=False)
    client.predict(*adapt_args(names, folders), api_name="/adapt")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 definitely not a jpeg")
    args = adapt_args(names, folders)
    args[1 + MAX_CLASSES + 4] = [handle_file(str(broken))]
    with pytest.raises(AppError, match="broken.jpg: not a readable image"):
        client.predict(*args, api_name="/adapt")
    with pytest.raises(AppError, match="are both named"):
        client.predict(*adapt_args(names[:4] + [names[0]], folders), api_name="/adapt")
    # the session still holds its earlier adaptation and classifies
    _, table, _ = client.predict([handle_file(str(queries[0]))], None, api_name="/classify")
    assert len(rows_of(table)) == 1
