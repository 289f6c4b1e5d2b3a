"""`hf-medtl evaluate MODEL_DIR DATA`: score a saved model on a folder, CSV or .npz split and write the report."""
from __future__ import annotations

from hf_medtl.cli.common import model_flags, model_on_data, non_negative, option_flags, options_from, positive
from hf_medtl.config.commands import EvaluateOptions
from hf_medtl.config.saved import DATA_KEYS, add_data_flags

OPTIONS = EvaluateOptions


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score a saved model on a folder, CSV or .npz split; write the report")
    model_on_data(p, OPTIONS)
    option_flags(p, OPTIONS, "batch_size", "n_bootstrap", "seed", "ci_method", "on_bad_image",
                 batch_size={"type": positive}, n_bootstrap={"type": non_negative})
    model_flags(p, OPTIONS)
    option_flags(p, OPTIONS, "allow_paths_outside_root", "cam", "data_cache", "data_cache_dir",
                 cam={"type": non_negative, "metavar": "N"})
    add_data_flags(p)  # the run's own columns and NIfTI slice unless given
    p.set_defaults(func=run, passthrough=False)


def run(args, rest) -> int:
    from hf_medtl import timings

    clock = timings.start()  # from the process's start when this process is the command (hf_medtl/timings.py)
    with clock.phase("startup"):  # the command's libraries (evaluate_model imports them where it needs them)
        from hf_medtl.evaluation import report, scoring  # noqa: F401
        from hf_medtl.inference.evaluate import evaluate_model
        from hf_medtl.inference import core  # noqa: F401
        from hf_medtl.models import load_saved_model  # noqa: F401

    m = evaluate_model(args.model_dir, args.data,
                       options_from(args, OPTIONS, data_keys={k: getattr(args, k, None) for k in DATA_KEYS}))
    ci = " (95% CI {:.4f}-{:.4f})".format(*m["ci"]["accuracy"]) if "ci" in m else ""
    print(f"{m['n']} images: accuracy {m['accuracy']:.4f}{ci}, F1 macro {m['f1_macro']:.4f}; report in {m['output_dir']}")
    if args.cam:
        print(f"Grad-CAM overlays of the most confident errors: {len(m['cam_overlays'])} in {m['output_dir']}/cam")
    print(timings.row(clock.snapshot()))
    timings.stop()
    return 0
