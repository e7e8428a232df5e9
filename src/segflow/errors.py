"""The one error type segflow raises for bad input; the CLI prints it as one line, no traceback."""

import re

# PyTorch's DataLoader re-raises an error of a worker process as the same type, built from a message that holds the
# worker's whole traceback: "Caught SegflowError in DataLoader worker process 0.\nOriginal Traceback ...".
_FROM_WORKER = re.compile(r"^Caught SegflowError in DataLoader (worker process \d+)\.\nOriginal Traceback.*\nsegflow\.errors\.SegflowError: (.*)$", re.S)


class SegflowError(Exception):
    """A problem with the user's input (config, data, checkpoint, paths).

    The message names the file or key, says what is wrong and what to do. Raised in a data-loading worker, it
    reaches the main process as the worker's own message, saying which reader met it, without the traceback.
    """

    def __init__(self, message: str = "") -> None:
        found = _FROM_WORKER.match(message) if isinstance(message, str) else None
        super().__init__(f"{found.group(2).strip()} (in data-loading {found.group(1)})" if found else message)
