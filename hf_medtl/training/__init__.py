"""The training stage: the transformers Trainer wired to the recipe (trainer), Algorithm 1 as a pure schedule
(schedule) and the callback that applies it (callbacks), θ*'s one owner (theta) and the record training hands on
(record), the loss (losses), MixUp / CutMix batches (mixing), the epoch budget (budget), weight averages (ema, swa),
peak memory (memory), the epoch rows and bars (progress), Ctrl-C as a saved epoch (interrupt), the cached features a
frozen backbone trains its head on (feature_cache, feature_store), and the k-NN fit that trains no weights (knn)."""
