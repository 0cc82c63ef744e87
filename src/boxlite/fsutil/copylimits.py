"""Default limits of one copy_out (``CopyOptions``), apart from the extractor so the options
can name them without loading it."""

DEFAULT_MAX_BYTES = 4 << 30  # tar bytes one copy_out may receive from a box
DEFAULT_MAX_ENTRIES = 500_000  # files, directories and links of one copy_out
DEFAULT_TIMEOUT = 3600.0  # seconds for one copy_out
