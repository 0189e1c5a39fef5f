"""The one error type an operator sees: a sentence that names the input and what to do, never a traceback."""


class PackwiseError(Exception):
    """A problem the operator can fix; the CLI prints the message on one line and exits non-zero."""

    exit_code = 2
