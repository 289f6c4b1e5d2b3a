"""training/memory.py: the CPU peak is the process's sampled RSS: at least the RSS when sampling began, and higher
by about a tensor's size when one is allocated (and touched) inside the window; the callback measures from train
begin to train end; a finished run's metrics.json holds peak_memory_mb and seconds_per_epoch."""
import json
import time
from types import SimpleNamespace

import torch

from hf_medtl.training.memory import PeakMemory, PeakMemoryCallback, _rss_mb


def test_cpu_peak_is_the_sampled_rss_and_sees_an_allocation():
    quiet = PeakMemory(interval=0.02).start("cpu")
    time.sleep(0.1)
    quiet.stop()
    assert quiet.kind == "process_rss" and quiet.peak_mb >= quiet.start_mb > 0

    meter = PeakMemory(interval=0.02).start("cpu")
    big = torch.ones(64 * 2 ** 20)  # 256 MB, every page written
    time.sleep(0.2)  # several sampling intervals while it is held
    del big
    meter.stop()
    assert meter.peak_mb >= meter.start_mb + 200, meter.record()
    assert meter.peak_mb >= quiet.peak_mb
    assert _rss_mb() < meter.peak_mb  # freed again: the peak is not just the current RSS
    assert meter._thread is None  # the sampler has ended


def test_callback_measures_from_train_begin_to_train_end():
    cb = PeakMemoryCallback(interval=0.02)
    args = SimpleNamespace(device=torch.device("cpu"))
    cb.on_train_begin(args, None, None)
    big = torch.ones(32 * 2 ** 20)  # 128 MB
    time.sleep(0.1)
    del big
    cb.on_train_end(args, None, None)
    record = cb.record()
    assert record["kind"] == "process_rss" and record["peak_mb"] >= record["start_mb"] + 100, record


def test_a_run_reports_peak_memory_and_seconds_per_epoch(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["memory"]["kind"] == ("cuda_max_memory_allocated" if torch.cuda.is_available() else "process_rss")
    assert metrics["peak_memory_mb"] == metrics["memory"]["peak_mb"] >= metrics["memory"]["start_mb"] > 0
    assert metrics["seconds_per_epoch"] == metrics["train_runtime_s"] / metrics["epochs_run"]
