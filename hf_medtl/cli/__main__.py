"""`python -m hf_medtl.cli ...`, as `hf-medtl ...`."""
import sys

from hf_medtl.cli import main

sys.exit(main())
