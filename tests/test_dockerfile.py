"""The Dockerfile, parsed with Docker's own parser (no Docker engine runs here).

Checks what a build would rely on: the two targets, a pinned TF Serving tag, the
model copied to TF Serving's ``/models/<name>/<version>`` layout as written by
``serving.export``, the ports, and that every copied path and the app's module exist.
"""

from __future__ import annotations

from pathlib import Path

import dockerfile
import pytest

from serving.versions import versions

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stages():
    out, current, args = {}, None, {}
    for cmd in dockerfile.parse_file(str(REPO / "Dockerfile")):
        if cmd.cmd == "ARG" and current is None:
            name, _, default = cmd.value[0].partition("=")
            args[name] = default
        elif cmd.cmd == "FROM":
            image, _, name = cmd.value
            current = name
            out[name] = {"image": image, "commands": [], "args": dict(args)}
        else:
            out[current]["commands"].append(cmd)
    return out


def values(stage, instruction):
    return [c.value for c in stage["commands"] if c.cmd == instruction]


def expand(text: str, variables: dict) -> str:
    for name, value in variables.items():
        text = text.replace("${" + name + "}", value)
    return text


def test_two_targets_with_pinned_images(stages):
    assert set(stages) == {"serving", "app"}
    serving_image = expand(stages["serving"]["image"], stages["serving"]["args"])
    assert serving_image == "tensorflow/serving:2.21.0"  # pinned, matches TensorFlow 2.21
    assert ":" in stages["app"]["image"] and "latest" not in stages["app"]["image"]


def test_serving_stage_copies_an_export_to_the_tf_serving_layout(stages, exported_model):
    stage = stages["serving"]
    variables = {}
    for value in values(stage, "ARG"):
        name, _, default = value[0].partition("=")
        variables[name] = default
    env = values(stage, "ENV")[0]
    variables.update(dict(zip(env[::2], env[1::2], strict=True)))
    assert variables["MODEL_NAME"] == "metagna"
    (source, destination), = values(stage, "COPY")
    source, destination = expand(source, variables), expand(destination, variables)
    assert destination == "/models/metagna"  # TF Serving's MODEL_BASE_PATH/MODEL_NAME
    # the source is the folder the README's export command writes, before `docker build`
    assert source == "exported/metagna"
    assert f"python -m serving.export --workdir runs/omniglot_metagna --output {source}" in (
        REPO / "README.md").read_text()
    assert set(values(stage, "EXPOSE")[0]) == {"8500", "8501"}
    # what `serving.export --output <MODEL_DIR>` writes (conftest's export of the trained
    # model) is a base path of version folders, exactly what TF Serving expects at
    # /models/metagna
    base = exported_model.parent
    assert versions(base) == [1]
    assert (base / "1" / "saved_model.pb").is_file()


def test_app_stage_installs_this_repository_and_runs_the_app(stages):
    stage = stages["app"]
    for copy in values(stage, "COPY"):
        for source in copy[:-1]:
            assert (REPO / source).exists(), source
    installs = [v[0] for v in values(stage, "RUN") if "pip install" in v[0]]
    assert installs and installs[0].rstrip().endswith('".[cpu]"')  # this repository, CPU TF
    entry = values(stage, "ENTRYPOINT")[0]
    assert entry[:3] == ("python", "-m", "serving.app")
    assert (REPO / "serving" / "app.py").is_file()
    assert "0.0.0.0" in entry and values(stage, "EXPOSE")[0] == ("7860",)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "runs" in ignored and "exported" not in ignored
