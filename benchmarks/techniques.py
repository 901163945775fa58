"""The technique table (weight tying, pruning, distillation, low-rank, quantization, efficient
architectures), every number measured in one run; see ``edgekit/techniques.py``.

    .venv/bin/python benchmarks/techniques.py [--model runs/demo/model.keras] [--readme README.md]

Exits 1 if a target is missed.
"""

import sys

from edgekit.techniques import main

if __name__ == "__main__":
    sys.exit(main())
