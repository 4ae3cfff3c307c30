"""Environment variables that change what Trinity does (or how Rich draws).

Tests never inherit them: they pass what they mean explicitly, or nothing.
"""

LEAKY_VARIABLE_PREFIXES = ("LLM_", "TRINITY_", "CACHE_REDIS_", "LOG_")
LEAKY_VARIABLES = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "FORCE_COLOR",
    "TTY_COMPATIBLE",
    "TTY_INTERACTIVE",
)


def is_leaky_variable(name: str) -> bool:
    return name.startswith(LEAKY_VARIABLE_PREFIXES) or name in LEAKY_VARIABLES
