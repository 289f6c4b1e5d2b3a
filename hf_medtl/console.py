"""What a user sees on the console: hf_medtl's rank-aware log lines, quiet libraries, and the one-line error
that every command prints instead of a traceback."""
from __future__ import annotations

import errno
import logging
import os
import sys
import warnings
from typing import Callable

from hf_medtl.errors import HfMedtlError

logger = logging.getLogger("hf_medtl")


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (a redirect made later, a test's capture)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)


def setup_logging() -> None:
    """hf_medtl's lines on the main process only ('[hf_medtl] ...' on stderr); transformers and datasets
    say only errors. Expected warnings (pin_memory on CPU, the replaced head's size mismatch) are silenced."""
    every_rank = os.environ.get("HF_MEDTL_LOG_ALL_RANKS", "0") == "1"  # to check that ranks agree
    if not logger.handlers:
        handler = _Stderr()
        logger.addHandler(handler)
        logger.propagate = False
    logger.handlers[0].setFormatter(logging.Formatter(f"[hf_medtl rank {_rank()}] %(message)s" if every_rank
                                                      else "[hf_medtl] %(message)s"))
    logger.setLevel(logging.INFO if _rank() == 0 or every_rank else logging.ERROR)
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    warnings.filterwarnings("ignore", message=".*upsample_bicubic2d_backward.*")
    # Expected on small medical test sets, and said by hf_medtl where it matters (a class absent from a split, its
    # metrics reported as undefined): scikit-learn's per-class warnings, and the plots' missing glyphs / empty legends.
    for message in (r"y_pred contains classes not in y_true", r".*ill-defined.*", r"Only one class is present",
                    r"No positive samples in y_true", r".*missing from font.*", r"No artists with labels found",
                    r".*torchvision backend is not available.*", r".*number of unique classes is greater than 50%.*"):
        warnings.filterwarnings("ignore", message=message)


def run_command(fn: Callable[[], int]) -> int:
    """Run a command; a HfMedtlError (bad input, named in its message) becomes one line and exit code 2."""
    try:
        return fn()
    except HfMedtlError as e:
        print(f"error: {message(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # A full disk is the user's to fix, wherever it struck: one line naming the file, as for any bad input.
        print(f"error: {e.filename or 'a file'}: no space left on the device ({e.strerror}); free space or point the "
              "output (output_dir, data_cache_dir, feature_cache_dir) at another disk", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing that looks complete was left behind", file=sys.stderr)
        return 130
    finally:
        _stop_loader_workers()


def message(e: HfMedtlError) -> str:
    """The error's one line. Raised in a DataLoader worker, torch re-raises it in the main process with
    "Caught DataError in DataLoader worker process 0. Original Traceback ..." as its message: its last line holds
    the original one ("module.DataError: message")."""
    text = str(e)
    if not (text.startswith("Caught ") and "\nOriginal Traceback" in text):
        return text
    name, _, original = text.rstrip().splitlines()[-1].partition(": ")
    return original if original and " " not in name else text.rstrip().splitlines()[-1]


def _stop_loader_workers() -> None:
    """The command's work is done: its persistent DataLoader workers (GPU runs) are stopped now, not one 5-s
    timeout at a time at the interpreter's exit (stop_loader_workers)."""
    import multiprocessing

    if "torch.utils.data" in sys.modules and multiprocessing.active_children():
        stop_loader_workers()


def stop_loader_workers() -> int:
    """Stop the persistent DataLoader workers of every loader still alive (GPU runs keep them across epochs), once
    a command's work is done. Left to the interpreter's exit, torch joined them one by one, each within a 5-s
    timeout it ran out: on an H200 a finished run's process lived on for minutes with the GPU idle (its main thread
    in DataLoader._clean_up_worker). They only read the run's images, so they are killed. Returns how many
    loaders held workers."""
    import gc

    from torch.utils.data import _utils, dataloader

    live = [o for o in gc.get_objects() if isinstance(o, dataloader._MultiProcessingDataLoaderIter)]
    for it in live:
        if getattr(it, "_worker_pids_set", False):  # unregistered first: torch's SIGCHLD check would call the kill
            _utils.signal_handling._remove_worker_pids(id(it))  # a worker failure and raise in the main thread
            it._worker_pids_set = False
        for w in getattr(it, "_workers", []):
            if w.is_alive():
                w.kill()
        it._shutdown_workers()  # the rest of torch's own shutdown (pin-memory thread, queues): joins return at once
    return len(live)


EPOCH_HEADER = ("epoch | train loss | train acc | val loss | val acc |    lr     | monitoring     |   time |     ETA | "
                "decision")


def duration(seconds: float) -> str:
    """A short wall time: 0.04s, 12.3s, 4m05s, 2h10m."""
    if seconds < 0.995:
        return f"{seconds:.2f}s"
    if seconds < 59.95:
        return f"{seconds:.1f}s"
    if seconds < 3599.5:
        return "{}m{:02d}s".format(*divmod(round(seconds), 60))
    return "{}h{:02d}m".format(*divmod(round(seconds / 60), 60))


def epoch_row(r: dict, timing: tuple[float, float | None] | None = None) -> str:
    """One aligned line per epoch, as Keras' LR-adjust callback prints: the numbers, the epoch's wall time and the
    time the remaining epochs would take at its pace ("≤": the schedule may stop sooner; "-": none remain), and
    what was decided. ``timing``: (seconds, ETA seconds or None), from hf_medtl.training.progress.EpochClock."""
    decision = ", ".join(t for k, t in (("save_best", "θ* saved"), ("reduced", f"LR reduced to x{r.get('lr_scale', 1):g}"),
                                         ("stop", "stop")) if r.get(k)) or "-"
    val_acc = r.get("val_accuracy")
    penalties = (f" | L1 {r['train_l1_feature_reg']:.4f} L2 {r['train_l2_feature_reg']:.4f}"
                 if r.get("train_l1_feature_reg") or r.get("train_l2_feature_reg") else "")
    seconds, eta = timing or (None, None)
    took = duration(seconds) if seconds is not None else "-"
    left = f"≤{duration(eta)}" if eta is not None else "-"
    return (f"{r['epoch']:5d} | {r['train_loss']:10.4f} | {r['train_accuracy']:9.4f} | {r['val_loss']:8.4f} | "
            f"{val_acc if val_acc is not None else float('nan'):7.4f} | {r['lr']:.3e} | {r.get('monitor', '-'):14s} | "
            f"{took:>6s} | {left:>7s} | {decision}{penalties}")
