"""User-facing errors: the CLI prints these as one line and exits non-zero."""


class BGPTError(Exception):
    """A problem with the user's input (file, folder, setting) rather than a bug."""


class CheckpointError(BGPTError):
    """A file that cannot be loaded as a bgpt or reference bGPT checkpoint."""
