"""The base of bleedjax's TFDS builders: local data only, nothing downloaded or checksummed."""

from __future__ import annotations

import tensorflow_datasets as tfds


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A ``GeneratorBasedBuilder`` without a download checksum file.

    ``code_path`` (used by TFDS only to find ``checksums.tsv``) is ``None``: with it, TFDS 4.9.10
    would import the ``importlib_resources`` backport, which it does not install on Python >= 3.9.
    """

    code_path = None
