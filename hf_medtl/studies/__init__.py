"""Studies built on finetune / evaluate: cross-validation and seeds, imbalance, robustness, search, strategies."""
from hf_medtl.studies.cv import run_cv
from hf_medtl.studies.imbalance import run_imbalance
from hf_medtl.studies.robustness import run_robustness
from hf_medtl.studies.search import run_search
from hf_medtl.studies.strategies import run_strategies

__all__ = ["run_cv", "run_imbalance", "run_robustness", "run_search", "run_strategies"]
