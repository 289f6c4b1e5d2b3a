"""Peak memory while a run trains, for metrics.json's ``peak_memory_mb``. On CUDA the allocator's peak
(``torch.cuda.max_memory_allocated``, its counter reset when training begins: weights, gradients, optimizer state
and activations, not the allocator's cached blocks). On CPU there is no such counter, so a daemon thread samples
the process's resident set size (psutil) every 0.1 s from train begin to train end: that is the whole process's
RSS (Python, the libraries, the decoded images, memory an earlier run in the same process left allocated), not
the training's own increase, and a spike shorter than one interval can be missed. ``start_mb`` (the RSS or the
allocated memory when measuring began) is kept beside the peak so that the increase can be read too."""
from __future__ import annotations

import threading

import torch
from transformers import TrainerCallback

MB = 2 ** 20


def _rss_mb() -> float:
    import psutil  # (installed with accelerate)

    return psutil.Process().memory_info().rss / MB


class PeakMemory:
    """start() ... stop(): ``peak_mb`` (and ``start_mb``, ``kind``) of the span between, on the device start() is
    given (default: CUDA when there is one)."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.cuda, self.device, self.kind = interval, False, None, None
        self.start_mb = self.peak_mb = None
        self._stop, self._thread = threading.Event(), None

    def start(self, device: torch.device | str | None = None) -> "PeakMemory":
        device = torch.device(device) if device is not None else None
        self.cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
        self.device, self.kind = device, "cuda_max_memory_allocated" if self.cuda else "process_rss"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = self.peak_mb = torch.cuda.memory_allocated(self.device) / MB
            return self
        self.start_mb = self.peak_mb = _rss_mb()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="hf_medtl-peak-rss", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):  # wait() returns True once stop() is called
            self.peak_mb = max(self.peak_mb, _rss_mb())

    def stop(self) -> float | None:
        if self.cuda:
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / MB
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.peak_mb = max(self.peak_mb, _rss_mb())  # a run shorter than one interval still has its end
        return self.peak_mb

    def record(self) -> dict:
        """What metrics.json keeps: the peak, what was measured, and the value when measuring began (MB, 1 dp)."""
        r = lambda v: None if v is None else round(v, 1)  # noqa: E731
        return {"peak_mb": r(self.peak_mb), "start_mb": r(self.start_mb), "kind": self.kind}


class PeakMemoryCallback(PeakMemory, TrainerCallback):
    """PeakMemory from on_train_begin to on_train_end, on the Trainer's device."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.start(args.device)

    def on_train_end(self, args, state, control, **kwargs):
        self.stop()
