"""The training stage: the transformers Trainer wired to the recipe (trainer), Algorithm 1 as a pure schedule
(schedule) and the callback that applies it (callbacks), the loss (losses), MixUp / CutMix batches (mixing), the
epoch budget (budget), weight averages (ema, swa), peak memory (memory), the epoch rows and bars (progress),
Ctrl-C as a saved epoch (interrupt), and the cached features a frozen backbone trains its head on (feature_cache,
feature_store)."""
