"""Fine-tune a pretrained backbone on a medical image dataset, as a JSON recipe says: the script form of
`hf-medtl finetune` (hf_medtl/cli/finetune.py), for launchers that run a file.

    accelerate launch hf_medtl/finetune.py recipes/brain_densenet.json [--key value ...]
    python -m hf_medtl.finetune recipes/brain_densenet.json

recipe -> data split -> backbone -> Trainer with the adaptive schedule -> test metrics -> saved model. Nothing in
the package imports this file; ``main`` and ``run`` (a loaded recipe run end to end: hf_medtl.studies.runs.run)
are re-exported for programs that call them from here."""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (accelerate launch hf_medtl/finetune.py): import the package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from hf_medtl.cli.finetune import main, run_recipe as run  # noqa: E402

__all__ = ["main", "run"]

if __name__ == "__main__":
    sys.exit(main())
