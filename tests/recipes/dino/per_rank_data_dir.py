"""phase5_big_run.py whose ``--data-dir images`` is a different folder in each rank, for a torchrun test
of what the ranks do when the folder changes between their listings: each rank works in its own
directory (``torchrun ... per_rank_data_dir.py CWD_RANK0 CWD_RANK1 FLAGS...``)."""

import os
import sys

from lrsched.recipes.dino.main import main

if __name__ == "__main__":
    directories, flags = sys.argv[1:3], sys.argv[3:]
    os.chdir(directories[int(os.environ["RANK"])])
    raise SystemExit(main([*flags, "--data-dir", "images"]))
