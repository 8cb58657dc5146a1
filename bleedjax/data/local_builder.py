"""The base of bleedjax's TFDS builders: local data only, nothing downloaded or checksummed."""

from __future__ import annotations

import tensorflow_datasets as tfds


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A ``GeneratorBasedBuilder`` without a download checksum file.

    ``code_path`` (used by TFDS only to find ``checksums.tsv``) is ``None``: with it, TFDS 4.9.10
    would import the ``importlib_resources`` backport, which it does not install on Python >= 3.9.
    """

    code_path = None


class LocalDatasetInfo(tfds.core.DatasetInfo):
    """A ``DatasetInfo`` that does not look for the dataset on TFDS's public bucket.

    TFDS calls ``initialize_from_bucket`` whenever a builder's dataset is not prepared yet. TFDS
    4.9.10 makes a temporary folder there before it finds GCS access disabled, and never removes it:
    one empty ``tmp*tfds`` folder in the system's temporary folder per builder. bleedjax's datasets
    are local and never on that bucket.
    """

    def initialize_from_bucket(self) -> None:
        return None

