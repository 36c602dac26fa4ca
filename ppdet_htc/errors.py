"""Errors caused by the user's input or environment, as opposed to bugs in this package.

The command-line scripts turn a :class:`UserError` (and the few foreign error classes listed in
``ppdet_htc.cli``) into one line on stderr and exit code 2; every other exception is a bug and keeps
its traceback. So a user-facing problem must raise one of these classes, never a bare ``ValueError``
or ``KeyError``; conversely nothing here should be raised for an internal inconsistency.

The classes also derive from the built-in exception that fits, so ``except ValueError`` in callers
that predate them keeps working.
"""

__all__ = [
    "UserError",
    "ConfigError",
    "UnknownModuleError",
    "AnnotationError",
    "ImageDecodeError",
    "UsageError",
    "ResultsFileError",
    "TrainingLogError",
    "NonFiniteLossError",
    "ImagesFailedError",
    "TrainingInterrupted",
]


class UserError(Exception):
    """Bad input or environment; the message says what is wrong, where, and what to do."""


class ConfigError(UserError, ValueError):
    """A config file or override is wrong; the message names the file, the key and the fix."""


class UnknownModuleError(ConfigError, KeyError):
    """A config names a module (class) that is not registered; the message lists close names."""

    def __str__(self):  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


class AnnotationError(UserError, ValueError):
    """The annotation file is malformed; the message names the file and the offending entry."""


class ImageDecodeError(UserError, ValueError):
    """An image file is missing or cannot be decoded; the message names the file."""


class UsageError(UserError, ValueError):
    """Command-line arguments that do not fit together (e.g. no input images given)."""


class ResultsFileError(UserError, ValueError):
    """A results file (bbox.json / mask.json) given for scoring is malformed."""


class TrainingLogError(UserError, ValueError):
    """A file given as a training log (``plot_train_log.py``) holds no training lines; the message names it."""


class NonFiniteLossError(UserError, FloatingPointError):
    """Training produced NaN/inf; the message names the iteration and the last good snapshot."""


class ImagesFailedError(UserError):
    """Some input images could not be read; the results of the others were written.

    ``failures``: list of ``(path, reason)``; ``results_path``: the results file that was written.
    """

    def __init__(self, message, failures=(), results_path=None):
        super().__init__(message)
        self.failures = list(failures)
        self.results_path = results_path

    def __reduce__(self):
        return (type(self), (self.args[0], self.failures, self.results_path))


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; ``snapshot`` is the resumable snapshot directory (or None)."""

    def __init__(self, message="training interrupted", snapshot=None):
        super().__init__(message)
        self.snapshot = snapshot

    def __reduce__(self):
        return (type(self), (self.args[0] if self.args else "", self.snapshot))
