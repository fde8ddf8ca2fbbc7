"""Load a SavedModel the way TF Serving and ``saved_model_cli run`` do: the TF1 loader.

Used by the tests and ``tools/bench_serving.py`` to run signatures exactly as a
TF Serving process would (a graph, a session, the signature's tensor names).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class LoadedModel:
    """A SavedModel loaded in its own graph and TF1 session."""

    def __init__(self, export_dir: str):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], export_dir)
        self.signatures = dict(meta.signature_def)

    def run(self, signature_name: str, inputs: dict) -> dict:
        if signature_name not in self.signatures:
            raise KeyError(f"Serving signature name: \"{signature_name}\" not found in signature def")
        sig = self.signatures[signature_name]  # feed names -> tensors of the signature's dtype
        missing = sorted(set(sig.inputs) - set(inputs))
        extra = sorted(set(inputs) - set(sig.inputs))
        if missing or extra:
            raise KeyError(f"input names mismatch: missing {missing}, unexpected {extra}")
        feed = {}
        for name, value in inputs.items():
            info = sig.inputs[name]
            feed[info.name] = np.asarray(value, dtype=tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
        fetch = {name: info.name for name, info in sig.outputs.items()}
        return self.session.run(fetch, feed)

    def close(self) -> None:
        self.session.close()
