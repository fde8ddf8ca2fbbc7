"""A stand-in for TF Serving's REST predict API, for tests (the real binary is not installable here).

It loads a SavedModel with the TF1 loader (``tf.compat.v1.saved_model.loader``), the
loader TF Serving uses, and answers ``POST /v1/models/<name>[/versions/<v>]:predict``
bodies in the columnar form the way TF Serving decodes them: each named input becomes
a tensor of its signature's dtype with the shape of the JSON nesting. The reply is
``{"outputs": {name: value}}``; a failed run is HTTP 400 ``{"error": message}``.
Only what metagna-tf's client uses is implemented (no row "instances" form, no gRPC).
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tensorflow as tf

from serving.tf1_loader import LoadedModel

__all__ = ["LoadedModel", "TFServingStub", "decode_columnar", "encode_outputs"]

PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(/versions/(?P<version>\d+))?:predict$")


def decode_columnar(body: dict) -> tuple[str, dict]:
    if "inputs" not in body or not isinstance(body["inputs"], dict):
        raise ValueError("this stand-in supports the columnar form with named inputs only")
    return body.get("signature_name", "serving_default"), body["inputs"]


def encode_outputs(outputs: dict) -> dict:
    def plain(value):
        value = np.asarray(value)
        if value.dtype.kind in "SO":
            return [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
        return value.tolist()

    return {"outputs": {name: plain(v) for name, v in outputs.items()}}


class TFServingStub:
    """``with TFServingStub({"metagna": export_dir}) as url_base: ...`` on 127.0.0.1."""

    def __init__(self, models: dict[str, str]):
        self.models = {name: LoadedModel(path) for name, path in models.items()}
        self.requests = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _reply(self, code: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802 - http.server's naming
                stub.requests += 1
                match = PATH.match(self.path)
                if not match or match["name"] not in stub.models:
                    self._reply(404, {"error": f"Servable not found for request: {self.path}"})
                    return
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    signature, inputs = decode_columnar(body)
                    outputs = stub.models[match["name"]].run(signature, inputs)
                except tf.errors.OpError as err:
                    self._reply(400, {"error": err.message})
                except (KeyError, ValueError, TypeError) as err:
                    self._reply(400, {"error": str(err)})
                else:
                    self._reply(200, encode_outputs(outputs))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1/models"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        for model in self.models.values():
            model.close()
