"""The Gradio app: upload a few images per class, adapt on the spot, classify new images.

    python -m serving.app --workdir runs/omniglot_metagna        # a training workdir
    python -m serving.app --model exported/metagna               # or a serving.export SavedModel
        [--host 127.0.0.1] [--port 7860] [--examples DIR] [--max-file-mb 10]

The model is loaded once and shared read-only; each browser session keeps its own
uploads and adapted weights (``gr.State``). The handlers live in
``serving.app_handlers``; this module only lays out the page.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
from pathlib import Path

from metagna_tf.cli import run

# no usage statistics sent to Gradio (and no network attempt on a closed machine)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

log = logging.getLogger(__name__)

INSTRUCTIONS = """
# Meta-GNA few-shot classifier

1. **Define your classes** (2 to 10): a name, and about **5 images** per class (1 to 20;
   any common format, colour mode and size). Or press *Load an example* for Omniglot characters.
2. **Adapt**: the meta-learned model adapts to your images right here, on the CPU, in a few
   inner gradient steps.
3. **Classify** new images: upload them, or use the webcam or the clipboard.
"""

# The class image lists sit in narrow columns, where Gradio's size-and-download column left
# each file name no room but its extension (".pn"): the names get the width, and wrap.
CSS = """
.class-files table.file-preview td.download { display: none; }
.class-files table.file-preview td.filename .stem { white-space: normal; overflow-wrap: anywhere; }
"""


def build_app(model, examples=None, limits=None):
    """The page (a ``gr.Blocks``) for ``model`` (an ``AppModel``)."""
    import gradio as gr

    from serving import app_handlers as h

    limits = limits or h.Limits()
    allowed = h.upload_folders() + ([examples.folder] if examples else [])
    size, channels = model.options.image_size, model.options.channels
    desc = (f"Model: **{model.algorithm}**, {size}x{size}x{channels} inputs, "
            f"{model.inner_steps} inner steps "
            f"(`{model.source}`).")

    with gr.Blocks(title="Meta-GNA few-shot classifier") as demo:
        state = gr.State(None)
        gr.Markdown(INSTRUCTIONS)
        gr.Markdown(desc, elem_id="model-description")
        with gr.Row():
            # a linear head fixes the number of classes: the slider then shows it, locked
            low, high = h.class_range(model.head_ways)
            first = model.head_ways or 5
            count = gr.Slider(h.MIN_CLASSES, h.MAX_CLASSES, value=first, step=1,
                              interactive=low != high, label="Number of classes"
                              + ("" if low != high else " (fixed by the model's linear head)"),
                              elem_id="class-count")
            example_button = gr.Button("Load an example (Omniglot characters)",
                                       visible=examples is not None, elem_id="example-button")
        names, files, galleries, boxes = [], [], [], []
        with gr.Row(equal_height=False):
            for i in range(h.MAX_CLASSES):
                with gr.Column(visible=i < first, min_width=200) as box:
                    names.append(gr.Textbox(label=f"Class {i + 1} name", value="",
                                            placeholder=f"Class {i + 1}",
                                            elem_id=f"class-name-{i + 1}"))
                    files.append(gr.File(file_count="multiple", file_types=["image"],
                                         label=f"Class {i + 1} images (5 work well)",
                                         height=160, elem_id=f"class-files-{i + 1}",
                                         elem_classes="class-files"))
                    galleries.append(gr.Gallery(label="Uploaded", columns=5, height=120,
                                                show_label=False, interactive=False,
                                                elem_id=f"class-gallery-{i + 1}"))
                boxes.append(box)
        adapt_button = gr.Button("Adapt", variant="primary", elem_id="adapt-button")
        summary = gr.Markdown(elem_id="adapt-summary")
        with gr.Row():
            loss_plot = gr.LinePlot(x="inner step", y="support loss",
                                    title="Support loss before each inner step and after the last",
                                    elem_id="loss-plot")
            scales_plot = gr.LinePlot(x="inner step", y="scale", color="tensor",
                                      title="Gradient-norm scale chosen per tensor at each "
                                            "inner step (1 = MAML's step)",
                                      visible=model.has_scales, elem_id="scales-plot")
        gr.Markdown("## Classify new images")
        with gr.Row():
            query_files = gr.File(file_count="multiple", file_types=["image"],
                                  label="Images to classify", height=240,
                                  elem_id="query-files")
            camera = gr.Image(sources=["webcam", "clipboard", "upload"], type="numpy",
                              label="Or one image from the webcam or clipboard",
                              elem_id="query-camera")
        classify_button = gr.Button("Classify", variant="primary", elem_id="classify-button")
        with gr.Row():
            query_gallery = gr.Gallery(label="Predictions", columns=6, height=220,
                                       elem_id="query-gallery")
            first_label = gr.Label(num_top_classes=3, label="First image",
                                   elem_id="first-label")
        table = gr.Dataframe(headers=["image", "top class", "2nd", "3rd"], interactive=False,
                             max_height=2000, wrap=True,
                             label="Top classes per image", elem_id="predictions")
        with gr.Row():
            onnx_button = gr.Button("Export the adapted classifier as ONNX",
                                    elem_id="onnx-button")
            onnx_file = gr.File(label="ONNX download (class names in the metadata)",
                                interactive=False, elem_id="onnx-file")

        # ---- events (thin wrappers over app_handlers) ------------------------------------
        def show_slots(n):
            return [gr.update(visible=i < int(n)) for i in range(h.MAX_CLASSES)]

        count.change(show_slots, count, boxes, api_name=False)
        for f, g in zip(files, galleries, strict=True):
            f.change(lambda value: h.as_paths(value) or None, f, g, api_name=False)

        def on_adapt(n, *values):
            new_state, losses, scales, text = h.adapt(
                model, n, values[:h.MAX_CLASSES], values[h.MAX_CLASSES:], allowed, limits)
            return new_state, losses, scales, text

        adapt_button.click(on_adapt, [count, *names, *files],
                           [state, loss_plot, scales_plot, summary], api_name="adapt")

        def on_classify(current, query, image):
            return h.classify(model, current, query, image, allowed, limits)

        classify_button.click(on_classify, [state, query_files, camera],
                              [query_gallery, table, first_label], api_name="classify")
        onnx_button.click(functools.partial(h.export_onnx, model), state, onnx_file,
                          api_name="export_onnx")

        if examples is not None:
            def on_example():
                n, example_names, supports, queries = examples.fill()
                return [n, *example_names, *supports, queries]

            example_button.click(on_example, None, [count, *names, *files, query_files],
                                 api_name="example")
    return demo


def example_source(examples_dir: str | None):
    """``--examples DIR``, else Omniglot from $METAGNA_DATA_DIR or the bundled sets."""
    from serving.app_handlers import Examples

    if examples_dir:
        return Examples.from_class_folders(Path(examples_dir))
    from metagna_tf.data import resolve_data_dir
    from metagna_tf.data.omniglot import bundled_dir

    try:
        return Examples.from_omniglot(resolve_data_dir(None) or bundled_dir())
    except (FileNotFoundError, ValueError) as err:
        log.warning("no examples (%s)", err)
        return None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m serving.app", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="a training workdir (or a copied best/ folder)")
    source.add_argument("--model", help="a SavedModel folder written by serving.export")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--inner-steps", type=int, help="default: the model's test-time steps")
    p.add_argument("--examples", help="folder of class subfolders for the example button "
                   "(default: Omniglot characters from $METAGNA_DATA_DIR or the bundled sets)")
    p.add_argument("--max-file-mb", type=float, default=10.0, help="largest accepted image")
    p.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="PIL's decompression-bomb limit for one image")
    args = p.parse_args(argv)
    import warnings

    from PIL import Image

    from serving.app_handlers import Limits
    from serving.app_model import AppModel

    Image.MAX_IMAGE_PIXELS = args.max_pixels  # PIL's guard, enforced as an error below
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    model = (AppModel.from_workdir(args.workdir, args.inner_steps) if args.workdir
             else AppModel.from_export(args.model, args.inner_steps))
    limits = Limits(max_file_mb=args.max_file_mb)
    examples = example_source(args.examples)
    demo = build_app(model, examples, limits)
    demo.queue(default_concurrency_limit=2).launch(
        server_name=args.host, server_port=args.port, max_file_size=f"{args.max_file_mb:g}mb",
        allowed_paths=[str(examples.folder)] if examples else None, show_error=True,
        footer_links=["api"], ssr_mode=False, css=CSS)


if __name__ == "__main__":
    run(main)
