"""Fine-tune a pretrained transformer with lrsched's run-length LR strategy (see docs/train.md).

python train.py --num_epochs 3 --bf16
"""

import os
import signal
import sys
from pathlib import Path


def _stop_before_start(signum: int, frame: object) -> None:
    """A signal while the program is still importing: nothing has been written, so just leave."""
    name = signal.Signals(signum).name
    os.write(2, f"train.py: stopped by {name} before the run started; nothing was written\n".encode())
    os._exit(0)


if __name__ == "__main__":
    for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(_sig, _stop_before_start)

try:
    import lrsched  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from lrsched.recipes.finetune.main import main  # noqa: E402  (after the signal handlers: importing torch takes seconds)

if __name__ == "__main__":
    sys.exit(main())
