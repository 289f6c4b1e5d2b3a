"""The training stage: the transformers Trainer wired to the recipe (trainer), Algorithm 1 as a pure schedule
(schedule) and the callback that applies it (callbacks), the loss (losses), the progress bar (progress), and the
cached features a frozen backbone trains its head on (feature_cache, feature_store)."""
