"""`hf-medtl compare RUN_DIR...`: finished runs side by side (seed 000's Table 2), with paired differences."""
from __future__ import annotations

from hf_medtl.cli.common import non_negative, option_flags
from hf_medtl.config.commands import CompareOptions

OPTIONS = CompareOptions


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help="tabulate finished runs as seed 000's Table 2 (Markdown + CSV)")
    p.add_argument("run_dirs", nargs="+", help="output_dirs of finished runs")
    option_flags(p, OPTIONS, "output_dir", "n_bootstrap", "seed", n_bootstrap={"type": non_negative})
    p.set_defaults(func=run, passthrough=False)


def run(args, rest) -> int:
    from hf_medtl.evaluation.compare import compare

    print(compare(args.run_dirs, args.output_dir, args.n_bootstrap, args.seed), end="")
    return 0
