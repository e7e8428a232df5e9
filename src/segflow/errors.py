"""The one error type segflow raises for bad input; the CLI prints it as one line, no traceback."""


class SegflowError(Exception):
    """A problem with the user's input (config, data, checkpoint, paths).

    The message names the file or key, says what is wrong and what to do.
    """
