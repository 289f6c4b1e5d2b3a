"""`hf-medtl predict MODEL_DIR INPUT...`: class probabilities of a saved model for images, DICOM files, folders."""
from __future__ import annotations

import sys

from hf_medtl.cli.common import MODEL_DIR_HELP, dataclass_flag, model_flags, option_flags, positive
from hf_medtl.config.commands import PredictOptions
from hf_medtl.config.saved import add_data_flags

OPTIONS = PredictOptions


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="class probabilities of a saved model for images, folders, DICOM files",
                              description="Predict INPUTs (image files, DICOM files, folders searched recursively) "
                                          "with a saved model; an unreadable file gets one line and the rest are "
                                          "still predicted.")
    p.add_argument("model_dir", help=MODEL_DIR_HELP)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or DICOM files, or folders")
    option_flags(p, OPTIONS, "format", "top_k", top_k={"type": positive})
    tta = p.add_mutually_exclusive_group()
    dataclass_flag(tta, OPTIONS, "tta", action="store_const", const=True)
    tta.add_argument("--no_tta", dest="tta", action="store_const", const=False,
                     help="the model alone on each image, whatever TTA the run was evaluated with")
    option_flags(p, OPTIONS, "cam", "batch_size", "output", cam={"metavar": "DIR"}, batch_size={"type": positive})
    model_flags(p, OPTIONS)
    add_data_flags(p, ("nifti_slice", "nifti_axis"))  # a 3-D volume: the run's own slice unless given
    p.set_defaults(func=run, passthrough=False)


def run(args, rest) -> int:
    from hf_medtl.inference.predict import format_predictions, predict
    from hf_medtl.outputs import check_destination, ensure_writable

    if args.output:  # before any model is loaded or image decoded
        check_destination(args.output, "--output")
    if args.cam:
        ensure_writable(args.cam, "--cam")

    preds = predict(args.model_dir, args.inputs, args.tta, args.batch_size, args.cam, args.allow_pickle_weights,
                    args.trust_remote_code, data_keys={"nifti_slice": args.nifti_slice, "nifti_axis": args.nifti_axis})
    text = format_predictions(preds, args.format, args.top_k)
    if args.output:
        from hf_medtl.outputs import atomic_write_text

        atomic_write_text(args.output, text)
        print(f"wrote {len(preds)} predictions to {args.output}")
    else:
        print(text, end="")
    if args.cam:
        print(f"Grad-CAM overlays in {args.cam}", file=sys.stderr)
    bad = sum(p.error is not None for p in preds)
    return 0 if bad < len(preds) else 2  # every file unreadable: nothing was predicted
