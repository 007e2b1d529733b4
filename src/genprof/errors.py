"""Error types. Each carries the exit code that the CLI turns it into."""

from __future__ import annotations


class GenprofError(Exception):
    """Base class for errors genprof raises on purpose.

    ``exit_code`` is what ``genprof`` exits with when this error reaches the CLI; the
    message is printed on stderr without a traceback.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(GenprofError):
    """Bad input from the user: a wrong argument, a missing file."""

    exit_code = 2


class RunFileError(UsageError):
    """A run file that cannot be read: truncated, corrupt, not genprof's, or from a newer genprof."""


class ConfigError(UsageError):
    """A configuration key or value that is not allowed."""


class MissingDependencyError(GenprofError):
    """An optional dependency is needed for this feature and is not installed."""

    exit_code = 3

    def __init__(self, package: str, feature: str, extra: str | None = None) -> None:
        hint = f"pip install 'genprof[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{feature} needs the optional package '{package}', which is not installed. Fix: {hint}")
        self.package = package
        self.feature = feature


class TargetFailedError(GenprofError):
    """One or more performance targets failed (used by ``genprof check``)."""

    exit_code = 1
