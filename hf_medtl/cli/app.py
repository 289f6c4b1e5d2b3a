"""`hf-medtl app MODEL_DIR`: a local browser app (Gradio) that predicts and explains one image at a time."""
from __future__ import annotations

from hf_medtl.cli.common import MODEL_DIR_HELP, model_flags, option_flags, positive
from hf_medtl.config.commands import AppOptions

OPTIONS = AppOptions


def register(subparsers) -> None:
    p = subparsers.add_parser("app", help='a local browser app: drop an image or DICOM, see probabilities and '
                                          'Grad-CAM (pip install -e ".[app]")')
    p.add_argument("model_dir", help=MODEL_DIR_HELP)
    option_flags(p, OPTIONS, "host", "port", port={"type": positive})
    model_flags(p, OPTIONS)
    p.set_defaults(func=run, passthrough=False)


def run(args, rest) -> int:
    from hf_medtl.inference.app import launch

    launch(args.model_dir, args.host, args.port, allow_pickle_weights=args.allow_pickle_weights,
           trust_remote_code=args.trust_remote_code)
    return 0
