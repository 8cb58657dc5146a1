"""Training data: TFDS stem builders (ArrayRecord), bleed augmentation and the Grain pipeline.

- :mod:`bleedjax.data.musdb18hq`, :mod:`bleedjax.data.multitrack_stems`: TFDS builders;
  :mod:`bleedjax.data.datasets`: ``prepare`` and ``data_source``.
- :mod:`bleedjax.data.augment`: pure, jittable bleed augmentation of ``(stems, key)``.
- :mod:`bleedjax.data.rir_bank`: room impulse responses from pyroomacoustics, stored with TFDS.
- :mod:`bleedjax.data.pipeline`: ``make_iterator`` (Grain) and ``to_global`` (``jax.Array``).
"""
