"""The five seed members of `small_data.py --ensemble 5` (BreastMNIST seed 1, fold 0; trained with tta none, and
training does not depend on tta) combined with and without flip views inside (models.ensemble.combine) and scored
on their shared test fold, with each member alone under the same views and the ensemble's gain over the best one:

    python benchmarks/ensemble_views.py   # after small_data.py --datasets breastmnist --ensemble 5

Writes benchmarks/results/small_data/breastmnist/ensemble5_tta.json."""
import contextlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipes_vs_example as rve  # noqa: E402
from hf_medtl import data
from hf_medtl.config.recipe import load_recipe
from hf_medtl.models.ensemble import combine
from hf_medtl.inference import core
from hf_medtl.evaluation.stats import paired_bootstrap
from sklearn.metrics import roc_auc_score
base = Path("outputs/small_data/breastmnist/ensemble5/seed-1/fold-0/recipe")
dirs = sorted((base / "members").iterdir())
# the fold's images, as recipes_vs_example wrote them for the run (it deletes them after)
npz = base.parent / "data.npz"
pool_recipe = load_recipe(Path(__file__).parent / "recipes" / "breastmnist_default.json", [])
images, labels_all, groups, _, _ = rve.pool_of(pool_recipe, None, 1)
rve.write_npz(npz, images, labels_all, rve.fold_parts(labels_all, groups, 5, 0, 1, None))
out = {}
for views in (["identity"], ["identity", "hflip"]):
    model, processor, classes = combine(dirs, [d.name for d in dirs], views)
    member = load_recipe(dirs[0] / "recipe.json")
    splits = data.load_splits(member.data, member.training.seed, dirs[0], write=False)
    ds = data.to_datasets(splits, data.preprocessing_from_processor(processor), member.data, contextlib.nullcontext)
    probs, labels = core.dataset_probabilities(core.inference_trainer(model, 64), ds["test"])
    acc = float((probs.argmax(1) == labels).mean())
    out["+".join(views)] = {"accuracy": acc, "auc": float(roc_auc_score(labels, probs[:, 1]))}
    if len(views) == 2:
        # each member alone with flip TTA (its own forward with the same views)
        mem = []
        for d in dirs:
            m, p, _ = combine([d, d], ["a", "b"], views)  # a member twice = the member with the views
            pr, _ = core.dataset_probabilities(core.inference_trainer(m, 64), ds["test"])
            mem.append((d.name, float((pr.argmax(1) == labels).mean()), pr))
        best = max(mem, key=lambda x: x[1])
        boot = paired_bootstrap(labels, probs, best[2], 1000, 1, metrics=("accuracy",))["accuracy"]
        out["members_tta"] = [(n, a) for n, a, _ in mem]
        out["gain_over_best_member_tta"] = boot
npz.unlink()
print(json.dumps(out, indent=1, default=float))
Path("benchmarks/results/small_data/breastmnist/ensemble5_tta.json").write_text(json.dumps(out, indent=2, default=float) + "\n")
