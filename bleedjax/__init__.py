"""bleedjax: microphone bleed removal for multi-track music recordings, in JAX."""

__version__ = "0.1.0"
