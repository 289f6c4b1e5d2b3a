"""`hf-medtl app MODEL_DIR`: a local browser app (Gradio) that predicts and explains one image at a time."""
from __future__ import annotations

from hf_medtl.cli.common import model_flags, positive


def register(subparsers) -> None:
    p = subparsers.add_parser("app", help='a local browser app: drop an image or DICOM, see probabilities and '
                                          'Grad-CAM (pip install -e ".[app]")')
    p.add_argument("model_dir", help="a finetune run's output_dir (or any saved image classifier)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    p.add_argument("--port", type=positive, help="port (default: Gradio's, 7860 or the next free one)")
    model_flags(p)
    p.set_defaults(func=run, passthrough=False)


def run(args, rest) -> int:
    from hf_medtl.inference.app import launch

    launch(args.model_dir, args.host, args.port, allow_pickle_weights=args.allow_pickle_weights,
           trust_remote_code=args.trust_remote_code)
    return 0
