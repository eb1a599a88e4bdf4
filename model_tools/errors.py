"""The one exception type the CLI turns into a clean message and a non-zero exit code."""


class ToolError(Exception):
    """A user-facing error: printed as ``error: <message>`` without a traceback."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
