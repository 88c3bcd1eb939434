"""Named defaults shared by the command line and the library (importing this costs nothing)."""

VERSION = "0.3.0"  # also in pyproject.toml

DEFAULT_MODEL = "kakaobrain/kogpt"
REVISIONS = ("KoGPT6B-ryan1.5b", "KoGPT6B-ryan1.5b-float16")
DEFAULT_REVISION = "KoGPT6B-ryan1.5b-float16"
DEVICES = ("cpu", "cuda")
DTYPE_CHOICES = ("auto", "float16", "bfloat16", "float32")
DEFAULT_TEMPERATURE = 0.8
DEFAULT_MAX_LENGTH = 128
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "sequential")
QUANTIZE_CHOICES = ("none", "int8", "int4")
