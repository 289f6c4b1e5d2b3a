"""`hf-medtl compare RUN_DIR...`: finished runs side by side (seed 000's Table 2), with paired differences."""
from __future__ import annotations

from hf_medtl.cli.common import dataclass_flag, non_negative
from hf_medtl.config.arguments import EvaluationArguments


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help="tabulate finished runs as seed 000's Table 2 (Markdown + CSV)")
    p.add_argument("run_dirs", nargs="+", help="output_dirs of finished runs")
    p.add_argument("--output_dir", default=".", help="where to write comparison.md, comparison.csv and paired.json")
    dataclass_flag(p, EvaluationArguments, "n_bootstrap", type=non_negative,
                   help="paired bootstrap resamples for the differences of runs on the same test set")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=run, passthrough=False)


def run(args, rest) -> int:
    from hf_medtl.evaluation.compare import compare

    print(compare(args.run_dirs, args.output_dir, args.n_bootstrap, args.seed), end="")
    return 0
