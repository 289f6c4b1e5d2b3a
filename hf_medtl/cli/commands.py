"""The `hf-medtl` sub-commands' bodies: each a thin call into the module that owns the stage, with lazy imports
so that `hf-medtl --help` and the data check start without loading torch. The parser is in hf_medtl/cli.py."""
from __future__ import annotations

import sys
from pathlib import Path


def finetune(ns, rest):
    from hf_medtl.finetune import main

    return main([ns.recipe, *rest])


def check_data(ns, rest):
    from hf_medtl.data import MANIFEST, load_splits, summary_line
    from hf_medtl.outputs import STAGING, ensure_writable, holds_complete_run
    from hf_medtl.config.recipe import load_recipe

    recipe = load_recipe(ns.recipe, rest)  # no backbone needed: nothing is built
    out = ensure_writable(recipe.training.output_dir)
    # A finished run's folder keeps its own, consistent data files; this check goes beside them.
    write_dir = ensure_writable(out / STAGING) if holds_complete_run(out) else out
    splits = load_splits(recipe.data, recipe.training.seed, out, write_dir=write_dir)
    splits.write_manifest(write_dir / MANIFEST)
    print(summary_line(splits) + f"\nwrote {write_dir / 'data_report.json'} and {write_dir / MANIFEST}")
    return 0


def convert(ns, rest):
    from hf_medtl.models.convert import convert_efficientnet_lite

    out = convert_efficientnet_lite(ns.variant, ns.output_dir)
    print(f"wrote {ns.variant} (ImageNet weights) as an HF checkpoint to {out}")
    return 0


def evaluate(ns, rest):
    from hf_medtl.evaluation.evaluate import evaluate_model

    m = evaluate_model(ns.model_dir, ns.data, ns.output_dir, ns.split, ns.batch_size, ns.n_bootstrap, ns.seed,
                       ns.ci_method, ns.on_bad_image, ns.allow_pickle_weights, ns.trust_remote_code,
                       ns.allow_paths_outside_root, cam=ns.cam, data_cache=not ns.no_data_cache,
                       data_cache_dir=ns.data_cache_dir)
    ci = " (95% CI {:.4f}-{:.4f})".format(*m["ci"]["accuracy"]) if "ci" in m else ""
    print(f"{m['n']} images: accuracy {m['accuracy']:.4f}{ci}, F1 macro {m['f1_macro']:.4f}; report in {m['output_dir']}")
    if ns.cam:
        print(f"Grad-CAM overlays of the most confident errors: {len(m['cam_overlays'])} in {m['output_dir']}/cam")
    return 0


def predict(ns, rest):
    from hf_medtl.inference.predict import format_predictions, predict, run_tta_views, views_of

    views = run_tta_views(ns.model_dir) if ns.tta is None else views_of(ns.tta)
    preds = predict(ns.model_dir, ns.inputs, views, ns.batch_size, ns.cam, ns.allow_pickle_weights,
                    ns.trust_remote_code)
    text = format_predictions(preds, ns.format, ns.top_k, views)
    if ns.output:
        from hf_medtl.outputs import atomic_write_text

        atomic_write_text(ns.output, text)
        print(f"wrote {len(preds)} predictions to {ns.output}")
    else:
        print(text, end="")
    if ns.cam:
        print(f"Grad-CAM overlays in {ns.cam}", file=sys.stderr)
    bad = sum(p.error is not None for p in preds)
    return 0 if bad < len(preds) else 2  # every file unreadable: nothing was predicted


def export(ns, rest):
    from hf_medtl.inference.export import ATOL, export_onnx

    r = export_onnx(ns.model_dir, ns.onnx, ns.check, opset=ns.opset, allow_pickle_weights=ns.allow_pickle_weights,
                    trust_remote_code=ns.trust_remote_code)
    print(f"wrote {r['path']}; onnxruntime matches PyTorch on {r['images_checked']} image(s): largest probability "
          f"difference {r['max_abs_diff']:.1e} (limit {ATOL:g})")
    return 0


def app(ns, rest):
    from hf_medtl.inference.app import launch

    launch(ns.model_dir, ns.host, ns.port, allow_pickle_weights=ns.allow_pickle_weights,
           trust_remote_code=ns.trust_remote_code)
    return 0


def compare(ns, rest):
    from hf_medtl.evaluation.compare import compare

    print(compare(ns.run_dirs, ns.output_dir, ns.n_bootstrap, ns.seed), end="")
    return 0


def cv(ns, rest):
    from hf_medtl.studies import run_cv

    s = run_cv(ns.recipe, rest, ns.folds, ns.seeds)
    acc = s["test"]["accuracy"]
    print(f"{len(s['runs'])} runs: test accuracy {acc['mean']:.4f} ± {acc['sd']:.4f} (range {acc['min']:.4f}-"
          f"{acc['max']:.4f}); summary in {Path(s['output_dir']) / 'report.md'}")
    return 0


def study_imbalance(ns, rest):
    from hf_medtl.studies import run_imbalance

    s = run_imbalance(ns.recipe, rest, ns.levels, ns.minority)
    print("\n".join(f"{r['level']}: test F1 macro {r['f1_macro']:.4f}" for r in s["levels"]) +
          f"\nreport in {Path(s['output_dir']) / 'report.md'}")
    return 0


def study_robustness(ns, rest):
    from hf_medtl.studies import run_robustness

    s = run_robustness(ns.model_dir, ns.data, ns.output_dir, ns.split, ns.perturbations, ns.severities, ns.batch_size,
                       ns.n_bootstrap, ns.seed, ns.allow_pickle_weights, ns.trust_remote_code)
    worst = min(s["rows"], key=lambda r: r["accuracy"])
    print(f"{s['images']} images, {len(s['rows'])} conditions; lowest accuracy {worst['accuracy']:.4f} "
          f"({worst['perturbation']} severity {worst['severity']}); report in {Path(s['output_dir']) / 'report.md'}")
    return 0


def study_search(ns, rest):
    from hf_medtl.studies import run_search

    s = run_search(ns.recipe, rest, ns.trials)
    print(f"{s['trials']} trials; best validation accuracy {s['best_value']:.4f} with {s['best_params']}; "
          f"re-run: hf-medtl finetune {Path(s['output_dir']) / 'best_recipe.json'}")
    return 0
