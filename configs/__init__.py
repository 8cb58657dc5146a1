"""Python config files (``get_config() -> ml_collections.ConfigDict``), installed as
``bleedjax.configs``."""
