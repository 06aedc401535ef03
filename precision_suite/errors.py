"""Exception types that the command line turns into one-line messages."""


class SpecError(ValueError):
    """Invalid case spec, case file or option value.

    The message names the field, the value and what is allowed, so the command line prints
    it without a traceback and exits with status 2.
    """


class BackendUnavailable(RuntimeError):
    """A backend cannot run a dtype or device on this machine; the message is the reason."""


class ResourceLimitError(SpecError):
    """A case would need more memory than the configured limit; the message has both numbers."""
