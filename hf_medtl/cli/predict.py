"""`hf-medtl predict MODEL_DIR INPUT...`: class probabilities of a saved model for images, DICOM files, folders."""
from __future__ import annotations

import sys
from pathlib import Path

from hf_medtl.cli.common import model_flags, positive
from hf_medtl.config.saved import add_data_flags


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="class probabilities of a saved model for images, folders, DICOM files",
                              description="Predict INPUTs (image files, DICOM files, folders searched recursively) "
                                          "with a saved model; an unreadable file gets one line and the rest are "
                                          "still predicted.")
    p.add_argument("model_dir", help="a finetune run's output_dir (or any saved image classifier)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or DICOM files, or folders")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="table: top-k labels (Markdown); csv / json: every label's probability")
    p.add_argument("--top_k", type=positive, default=3, help="labels per image in the table (default 3)")
    tta = p.add_mutually_exclusive_group()
    tta.add_argument("--tta", action="store_const", const=True, default=None,
                     help="average the probabilities over the identity, a horizontal flip and rotations of +/-10 "
                          "degrees (default: the views the run's metrics averaged over, its recipe's `tta`)")
    tta.add_argument("--no_tta", dest="tta", action="store_const", const=False,
                     help="the model alone on each image, whatever TTA the run was evaluated with")
    p.add_argument("--cam", metavar="DIR", help="also write a Grad-CAM overlay PNG per image into DIR")
    p.add_argument("--batch_size", type=positive, default=32)
    p.add_argument("--output", help="write the predictions to this file instead of printing them")
    model_flags(p)
    add_data_flags(p, ("nifti_slice", "nifti_axis"))  # a 3-D volume: the run's own slice unless given
    p.set_defaults(func=run, passthrough=False)


def run(args, rest) -> int:
    from hf_medtl.inference.core import run_tta_views, views_of
    from hf_medtl.inference.predict import format_predictions, predict
    from hf_medtl.errors import HfMedtlError

    from hf_medtl.outputs import check_destination, ensure_writable

    if args.output:  # before any model is loaded or image decoded
        check_destination(args.output, "--output")
    if args.cam:
        ensure_writable(args.cam, "--cam")

    views = run_tta_views(args.model_dir) if args.tta is None else views_of(args.tta)
    preds = predict(args.model_dir, args.inputs, views, args.batch_size, args.cam, args.allow_pickle_weights,
                    args.trust_remote_code, data_keys={"nifti_slice": args.nifti_slice, "nifti_axis": args.nifti_axis})
    text = format_predictions(preds, args.format, args.top_k, views)
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
