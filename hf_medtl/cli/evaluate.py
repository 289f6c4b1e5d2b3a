"""`hf-medtl evaluate MODEL_DIR DATA`: score a saved model on a folder, CSV or .npz split and write the report."""
from __future__ import annotations

from hf_medtl.cli.common import dataclass_flag, model_flags, model_on_data, non_negative, positive
from hf_medtl.config.arguments import DataArguments, EvaluationArguments
from hf_medtl.config.saved import DATA_KEYS, add_data_flags


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score a saved model on a folder, CSV or .npz split; write the report")
    model_on_data(p, "eval")
    p.add_argument("--batch_size", type=positive, default=64)
    dataclass_flag(p, EvaluationArguments, "n_bootstrap", type=non_negative)
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    dataclass_flag(p, EvaluationArguments, "ci_method")
    dataclass_flag(p, DataArguments, "on_bad_image",
                   help="error: an unreadable image stops the command; skip: it is skipped with a warning")
    model_flags(p)
    dataclass_flag(p, DataArguments, "allow_paths_outside_root")
    p.add_argument("--cam", type=non_negative, default=0, metavar="N",
                   help="write Grad-CAM overlays of the N most confident errors of each class to OUTPUT_DIR/cam")
    p.add_argument("--no_data_cache", action="store_true",
                   help="decode the files directly instead of through the decode-once image cache")
    dataclass_flag(p, DataArguments, "data_cache_dir")
    add_data_flags(p)  # the run's own columns and NIfTI slice unless given
    p.set_defaults(func=run, passthrough=False)


def run(args, rest) -> int:
    from hf_medtl import timings

    clock = timings.start()  # from the process's start when this process is the command (hf_medtl/timings.py)
    with clock.phase("startup"):  # the command's libraries (evaluate_model imports them where it needs them)
        from hf_medtl.evaluation import report, scoring  # noqa: F401
        from hf_medtl.evaluation.evaluate import evaluate_model
        from hf_medtl.inference import core  # noqa: F401
        from hf_medtl.models import load_saved_model  # noqa: F401

    m = evaluate_model(args.model_dir, args.data, output_dir=args.output_dir, split=args.split,
                       batch_size=args.batch_size, n_bootstrap=args.n_bootstrap, seed=args.seed, ci_method=args.ci_method,
                       on_bad_image=args.on_bad_image, allow_pickle_weights=args.allow_pickle_weights,
                       trust_remote_code=args.trust_remote_code, allow_paths_outside_root=args.allow_paths_outside_root,
                       cam=args.cam, data_cache=not args.no_data_cache, data_cache_dir=args.data_cache_dir,
                       data_keys={k: getattr(args, k, None) for k in DATA_KEYS})
    ci = " (95% CI {:.4f}-{:.4f})".format(*m["ci"]["accuracy"]) if "ci" in m else ""
    print(f"{m['n']} images: accuracy {m['accuracy']:.4f}{ci}, F1 macro {m['f1_macro']:.4f}; report in {m['output_dir']}")
    if args.cam:
        print(f"Grad-CAM overlays of the most confident errors: {len(m['cam_overlays'])} in {m['output_dir']}/cam")
    print(timings.row(clock.snapshot()))
    timings.stop()
    return 0
