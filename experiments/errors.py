"""The harness's one error type: a bad flag value or input file."""


class InputError(ValueError):
    """A bad flag value or input file: reported in one line that names it."""
