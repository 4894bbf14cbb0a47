"""The one user-error type shared by the runner and the packager."""


class UserError(Exception):
    """A problem with what the user gave us, not a bug.

    The CLIs print it as one ``error: ...`` line (plus the hint) and exit
    non-zero, without a traceback.

    Args:
        message: What was expected and what was found.
        hint: What to do about it.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}. {self.hint}" if self.hint else self.message
