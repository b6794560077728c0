"""Fine-tune a pretrained transformer with lrsched's run-length LR strategy (see docs/train.md).

python train.py --num_epochs 3 --bf16
"""

import sys
from pathlib import Path

try:
    import lrsched  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from lrsched.recipes.finetune.main import main

if __name__ == "__main__":
    sys.exit(main())
