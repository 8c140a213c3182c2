"""The one exception type the CLI turns into a one-line message (no traceback unless --debug)."""


class MoELabError(Exception):
    """A user-facing failure: the message names the file or option at fault."""


class CheckpointError(MoELabError):
    """A checkpoint directory or safetensors file that cannot be read as claimed."""


class ConfigError(MoELabError):
    """A config, experiment file or option that is invalid; the message names the field."""
