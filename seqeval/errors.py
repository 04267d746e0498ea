"""User-facing errors: the CLI prints the message on one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (unknown name, bad setting, broken data).

    The message must name the problem and the fix, on one line.
    """


class DivergenceError(RuntimeError):
    """Training produced non-finite losses or parameters."""
