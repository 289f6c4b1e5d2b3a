"""The options of the commands that are not recipe keys (evaluate, predict, export, app, compare, cv and the studies):
one dataclass per command, each field one flag's default and help. The command line builds its flags from these
(hf_medtl.cli.common.dataclass_flag) and the library functions take their defaults from them, so each default is
written once. An option that is also a recipe key (n_bootstrap, ci_method, on_bad_image, ...) is declared as that
key (``like``). Light to import (no torch): the parsers are built at --help speed."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional

from hf_medtl.config.arguments import DataArguments, EvaluationArguments, ModelArguments

EVAL_BATCH_SIZE = 64  # images per forward pass when scoring (also per_device_eval_batch_size's default)
BOOTSTRAP_SEED = 0
# `hf-medtl study strategies`: the MedMNIST+ set of baselines for one backbone, in the order they run.
STRATEGIES = ("linear_probe", "knn", "full", "partial", "lora")
SEVERITIES = (0, 1, 2, 3, 4, 5)  # `hf-medtl study robustness`: 0 is the clean image, 1..5 grow harsher
# `hf-medtl export`: the opset written (the exporter's range is hf_medtl.inference.export's MIN/MAX_OPSET), and the
# most images the ONNX graph is checked on.
DEFAULT_OPSET, MAX_CHECK = 18, 64
# `hf-medtl study imbalance`: each named level's imbalance_ratio (None: the data as it is).
IMBALANCE_LEVELS = {"none": None, "mild": 0.5, "moderate": 0.2, "severe": 0.05}


def like(cls: type, name: str, help: str | None = None, default=dataclasses.MISSING):
    """A field declared as the recipe key ``cls.name`` is: its default and help (``help`` / ``default`` given:
    the command's own)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    metadata = {**f.metadata, **({"help": help} if help else {})}
    if default is not dataclasses.MISSING:
        return field(default=default, metadata=metadata)
    if f.default is dataclasses.MISSING:
        return field(default_factory=f.default_factory, metadata=metadata)
    return field(default=f.default, metadata=metadata)


def option(default, help: str):
    return field(default=default, metadata={"help": help})


def _output_dir(suffix: str):
    return option(None, f"where to write (default: <model_dir>_{suffix}_<data name> beside the model)")


SPLIT_HELP = "which split of an .npz or a dataset (train, val, test)"


def _seed():
    return option(BOOTSTRAP_SEED, "bootstrap seed")


@dataclass
class EvaluateOptions:
    """`hf-medtl evaluate MODEL_DIR DATA` (hf_medtl.inference.evaluate.evaluate_model)."""
    output_dir: Optional[str] = _output_dir("eval")
    split: str = option("test", SPLIT_HELP)
    batch_size: int = option(EVAL_BATCH_SIZE, "images per forward pass")
    n_bootstrap: int = like(EvaluationArguments, "n_bootstrap")
    seed: int = _seed()
    ci_method: Literal["bca", "percentile"] = like(EvaluationArguments, "ci_method")
    on_bad_image: Literal["error", "skip"] = like(
        DataArguments, "on_bad_image", "error: an unreadable image stops the command; skip: it is skipped with a warning")
    allow_pickle_weights: bool = like(ModelArguments, "allow_pickle_weights")
    trust_remote_code: bool = like(ModelArguments, "trust_remote_code")
    allow_paths_outside_root: bool = like(DataArguments, "allow_paths_outside_root")
    cam: int = option(0, "write Grad-CAM overlays of the N most confident errors of each class to OUTPUT_DIR/cam")
    data_cache: bool = option(True, "true: read the images through the decode-once image cache, as the run did; "
                                    "--no_data_cache: decode the files directly")
    data_cache_dir: Optional[str] = like(DataArguments, "data_cache_dir")
    # Not flags of their own: the data flags (--path_column, ... config/saved.py) fill data_keys.
    max_image_pixels: Optional[int] = option(None, "largest width x height decoded; default: the run's (recipe.json)")
    data_keys: Optional[dict] = option(None, "the data keys given as flags (config/saved.py DATA_KEYS); the "
                                             "run's own for the others")


@dataclass
class PredictOptions:
    """`hf-medtl predict MODEL_DIR INPUT...` (hf_medtl.inference.predict)."""
    format: Literal["table", "csv", "json"] = option(
        "table", "table: top-k labels (Markdown); csv / json: every label's probability")
    top_k: int = option(3, "labels per image in the table")
    tta: Optional[bool] = option(None, "true (--tta): average the probabilities over the identity, a horizontal flip "
                                       "and rotations of +/-10 degrees; false (--no_tta): the model alone on each "
                                       "image; default: the views the run's metrics averaged over, its recipe's `tta`")
    cam: Optional[str] = option(None, "also write a Grad-CAM overlay PNG per image into DIR")
    batch_size: int = option(32, "images per forward pass")
    output: Optional[str] = option(None, "write the predictions to this file instead of printing them")
    allow_pickle_weights: bool = like(ModelArguments, "allow_pickle_weights")
    trust_remote_code: bool = like(ModelArguments, "trust_remote_code")


@dataclass
class ExportOptions:
    """`hf-medtl export MODEL_DIR --onnx OUT --check INPUT...` (hf_medtl.inference.export.export_onnx)."""
    onnx: Optional[str] = option(None, "the .onnx file to write")
    check: Optional[list[str]] = option(None, "real images or folders to compare onnxruntime with PyTorch on (up to "
                                              f"{MAX_CHECK} images)")
    opset: int = option(DEFAULT_OPSET, "the ONNX opset to write")
    allow_pickle_weights: bool = like(ModelArguments, "allow_pickle_weights")
    trust_remote_code: bool = like(ModelArguments, "trust_remote_code")


@dataclass
class AppOptions:
    """`hf-medtl app MODEL_DIR` (hf_medtl.inference.app.launch)."""
    host: str = option("127.0.0.1", "address to serve on (127.0.0.1: this machine only)")
    port: Optional[int] = option(None, "port (default: Gradio's, 7860 or the next free one)")
    allow_pickle_weights: bool = like(ModelArguments, "allow_pickle_weights")
    trust_remote_code: bool = like(ModelArguments, "trust_remote_code")


@dataclass
class CompareOptions:
    """`hf-medtl compare RUN_DIR...` (hf_medtl.evaluation.compare.compare)."""
    output_dir: str = option(".", "where to write comparison.md, comparison.csv and paired.json")
    n_bootstrap: int = like(EvaluationArguments, "n_bootstrap",
                            "paired bootstrap resamples for the differences of runs on the same test set")
    seed: int = _seed()


@dataclass
class CvOptions:
    """`hf-medtl cv RECIPE` (hf_medtl.studies.cv)."""
    folds: int = option(5, "number of folds (1: the recipe's own split)")
    seeds: int = option(1, "repeat with this many seeds")
    ensemble: bool = option(False, "also save the runs' models as ONE model that averages their probabilities, in "
                                   "output_dir/ensemble, scored on the shared test split")
    seed: Optional[int] = option(None, "the study's first seed (the recipe's 'seed'); with --fold, the seed of that "
                                       "job's run (one of the study's seeds; default its first)")
    fold: Optional[int] = option(None, "train only this fold (0..K-1; 0 with --folds 1) of the seed --seed, into the "
                                       "folder the one-process cv uses (reused when finished there): one job of a "
                                       "job array")
    collect: bool = option(False, "write the summary (and --ensemble) from the runs the jobs finished; names any "
                                  "missing run")
    plan: bool = option(False, "print one command per job, each job's folder, and what --collect reads; runs nothing")


@dataclass
class ImbalanceOptions:
    """`hf-medtl study imbalance RECIPE` (hf_medtl.studies.imbalance.run_imbalance)."""
    levels: str = option(",".join(IMBALANCE_LEVELS), "comma-separated: " + ", ".join(
        f"{name} (1:{round(1 / r)})" if r else name for name, r in IMBALANCE_LEVELS.items()) + ", a ratio 1:k or a fraction")
    minority: Optional[str] = option(None, "comma-separated classes to subsample (default: all but the largest)")


@dataclass
class RobustnessOptions:
    """`hf-medtl study robustness MODEL_DIR DATA` (hf_medtl.studies.robustness.run_robustness)."""
    output_dir: Optional[str] = _output_dir("robustness")
    split: str = option("test", SPLIT_HELP)
    perturbations: str = option("all", "comma-separated names, or all")
    severities: str = option(",".join(map(str, SEVERITIES)), f"comma-separated severities in "
                                                             f"{SEVERITIES[0]}..{SEVERITIES[-1]}")
    batch_size: int = option(EVAL_BATCH_SIZE, "images per forward pass")
    # Fewer resamples than evaluate's default: one interval per perturbation x severity condition.
    n_bootstrap: int = like(EvaluationArguments, "n_bootstrap", "bootstrap resamples per condition", default=200)
    seed: int = _seed()
    allow_pickle_weights: bool = like(ModelArguments, "allow_pickle_weights")
    trust_remote_code: bool = like(ModelArguments, "trust_remote_code")


@dataclass
class SearchOptions:
    """`hf-medtl study search RECIPE` (hf_medtl.studies.search.run_search)."""
    trials: int = option(10, "number of finished trials the study ends with, over all its workers (a rerun continues "
                             "to this many)")
    storage: Optional[str] = option(None, "where the trials are kept: an Optuna RDB URL (sqlite:///search.db, "
                                          "postgresql://user@host/db, mysql://...) or a journal file path (default: "
                                          "optuna_journal.log in output_dir); every worker started with the same "
                                          "storage and --study_name runs trials of one study")
    study_name: str = option("hf_medtl_search", "the study's name in the storage")


@dataclass
class StrategiesOptions:
    """`hf-medtl study strategies RECIPE` (hf_medtl.studies.strategies.run_strategies)."""
    strategies: str = option(",".join(STRATEGIES), "comma-separated finetune_strategy values")
    folds: int = option(1, "K > 1: each strategy as K-fold cross-validation on the non-test pool, paired tests over "
                           "the folds (1: one run each on the recipe's split)")
