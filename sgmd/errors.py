"""User-facing errors: one exception type whose message is a single line that says what was
wrong and what to do. The CLI prints it without a traceback (exit code 2); nodes show it."""


class SGMDError(Exception):
    """A problem the user can fix (bad file, bad option, bad schedule...)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
