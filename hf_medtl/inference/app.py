"""`hf-medtl app MODEL_DIR`: a local Gradio app. Drop an image or a DICOM file: the class probabilities, the
Grad-CAM overlay of the top class, and the model card's intended-use warning. Optional: ``pip install -e ".[app]"``.

The app serves the same path as `hf-medtl predict`: the toolkit's decoding, the saved processor, one softmax.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from hf_medtl.config.commands import AppOptions
from hf_medtl.errors import HfMedtlError

DEFAULT_WARNING = ("**Research model, not a medical device.** It must not be used to diagnose, triage or treat "
                   "anyone.")
SECTIONS = ("Intended use", "Out-of-scope use")


def intended_use(model_dir: str | Path) -> str:
    """The card's 'not a medical device' note and its intended / out-of-scope use sections (Markdown)."""
    readme = Path(model_dir) / "README.md"
    if not readme.is_file():
        return DEFAULT_WARNING
    from huggingface_hub import ModelCard

    text = ModelCard.load(readme).text
    notes = [m.group(0).strip() for m in re.finditer(r"^> \*\*Not a medical device\.\*\*.*?(?=\n\n)", text, re.S | re.M)]
    for name in SECTIONS:
        m = re.search(rf"^## {re.escape(name)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
        if m:
            notes.append(f"**{name}.** " + " ".join(m.group(1).split()))
    return "\n\n".join(notes) or DEFAULT_WARNING


def classify_file(served, path):
    """What the app shows for an uploaded file: ({class: probability}, the top class's Grad-CAM overlay image), by
    the served model (hf_medtl.inference.core.load) exactly as predict serves it."""
    from PIL import Image

    from hf_medtl.inference.explain import blend, image_cams

    image = served.decode(path)
    probs = served.probabilities([image])[0]
    cam = image_cams(served.model, served.processor, [image], [int(probs.argmax())], served.views)[0]
    _, overlay = blend(image, cam, size=384)
    return ({c: float(p) for c, p in zip(served.classes, probs)},
            Image.fromarray((overlay * 255).round().astype("uint8")))


def build_app(model_dir: str | Path, allow_pickle_weights: bool = False, trust_remote_code: bool = False):
    """The Gradio Blocks app for a saved model (not launched)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise HfMedtlError('the app needs Gradio: pip install -e ".[app]"') from None
    from hf_medtl.data.decode import DecodeError
    from hf_medtl.inference import core

    served = core.load(model_dir, None, allow_pickle_weights, trust_remote_code)  # the run's views, as it was scored
    name, classes, views = Path(model_dir).resolve().name, served.classes, served.views

    def classify(path):
        if not path:
            return None, None
        try:
            return classify_file(served, path)
        except DecodeError as e:
            raise gr.Error(f"{Path(path).name}: unreadable ({e})")

    with gr.Blocks(title=f"{name} (hf_medtl)") as demo:
        gr.Markdown(f"# {name}\n{len(classes)} classes: {', '.join(classes)}"
                    + (f"; probabilities averaged over {', '.join(views)}, as the run was evaluated" if len(views) > 1 else ""))
        gr.Markdown(intended_use(model_dir), elem_id="intended-use")
        with gr.Row():
            upload = gr.File(label="image or DICOM file", type="filepath", elem_id="upload")
            probabilities = gr.Label(num_top_classes=len(classes), label="class probabilities", elem_id="probabilities")
            overlay = gr.Image(label="Grad-CAM (top class)", type="pil", elem_id="cam")
        upload.change(classify, inputs=upload, outputs=[probabilities, overlay])
    return demo


def launch(model_dir: str | Path, host: str = AppOptions.host, port: int | None = None, **kwargs) -> None:
    """Serve the app until interrupted (local only unless ``host`` says otherwise; never a public share link)."""
    build_app(model_dir, **kwargs).launch(server_name=host, server_port=port, share=False)
