"""The exit statuses of both programs, declared once (``skeleton.py`` decides which applies);
docs/design.md ("Exit statuses and what is proved") is the table users read."""

EXIT_FAILED = 1
"""A full disk (one line; the newest checkpoint is intact)."""
EXIT_USAGE = 2
"""Bad input: one line naming the flag and the rule; nothing written."""
EXIT_NONFINITE = 3
"""A non-finite loss or gradient: that step is not applied, the last good checkpoint stays."""
EXIT_DATA = 4
"""phase5: the data path failed (no batch before --data-timeout, images gone, a worker died); state saved."""
EXIT_ERROR = 5
"""Any other error once the model exists; the whole state saved, the traceback in error.log."""
