"""Preparing and opening the stem datasets: builder by name, ``prepare`` and ``data_source``.

``prepare`` writes ArrayRecord files under ``data_dir/<builder>/<config>/1.0.0``; ``data_source``
reads them back with ``tfds.data_source`` (random access, no TensorFlow needed). A dataset
remembers the ``manual_dir`` it was prepared from; preparing the same settings again from
another folder is refused unless ``overwrite``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import tensorflow_datasets as tfds
from etils import epath

from bleedjax.data import rir_bank, stem_blocks
from bleedjax.data.multitrack_stems import MultitrackStems
from bleedjax.data.musdb18hq import Musdb18hq
from bleedjax.sessions import SessionError, without_pad_hint

BUILDERS = {"multitrack_stems": MultitrackStems, "musdb18hq": Musdb18hq}


def resolve_data_dir(data_dir) -> str | None:
    """``data_dir`` with ``~`` expanded; a URL (``gs://bucket/tfds``) as it is (``pathlib`` would
    collapse its ``//`` into a local folder named ``gs:``)."""
    if not data_dir:
        return None
    return str(data_dir) if _is_remote(data_dir) else str(pathlib.Path(data_dir).expanduser())


def _is_remote(path) -> bool:
    return "://" in str(path)


def get_builder(
    name: str, *, data_dir=None, sample_rate: int = 22050, channels: int = 1, block_seconds: float = 10.0
) -> tfds.core.DatasetBuilder:
    """The TFDS builder ``name`` with the config of these settings (nothing is read or written)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown builder {name!r}; choose from {', '.join(BUILDERS)}")
    config = stem_blocks.make_config(sample_rate, channels, block_seconds)
    return BUILDERS[name](config=config, data_dir=resolve_data_dir(data_dir), file_format="array_record")


def builder_from_config(data_config) -> tfds.core.DatasetBuilder:
    return get_builder(
        data_config.builder, data_dir=data_config.data_dir, sample_rate=data_config.sample_rate,
        channels=data_config.channels, block_seconds=data_config.block_seconds,
    )


def prepare(
    builder: str = "multitrack_stems",
    *,
    manual_dir,
    data_dir=None,
    sample_rate: int = 22050,
    channels: int = 1,
    block_seconds: float = 10.0,
    overwrite: bool = False,
) -> pathlib.Path:
    """Prepares a stem dataset from ``manual_dir`` (a no-op when it is prepared already).

    Args:
        builder: ``"multitrack_stems"`` or ``"musdb18hq"``.
        manual_dir: the folder of stems in the builder's layout.
        data_dir: where TFDS datasets live (default ``~/tensorflow_datasets``).
        sample_rate, channels, block_seconds: the builder config.
        overwrite: rebuild a dataset with these settings that is prepared already (from this
            folder, after its stems changed, or from another one).

    Returns:
        ``data_dir`` (TFDS's default when not given), to put in ``config.data.data_dir``.

    Raises:
        SessionError: naming the path, for a missing or empty ``manual_dir``, missing stems,
            differing sample rates or lengths, or a dataset prepared from another folder.
    """
    root = stem_blocks.check_manual_dir(manual_dir)
    settings = {"sample_rate": sample_rate, "channels": channels, "block_seconds": block_seconds}
    dataset = get_builder(builder, data_dir=data_dir, **settings)
    remote = _is_remote(dataset.data_dir)
    target = (epath.Path if remote else pathlib.Path)(dataset.data_dir)
    data_root = target.parents[2]  # data_dir/<builder>/<config>/<version>
    if dataset.is_prepared():
        previous = dataset.info.metadata.get("manual_dir") if dataset.info.metadata else None
        if previous == str(root.resolve()) and not overwrite:
            return data_root
        if not overwrite:
            raise SessionError(
                f"{target}: prepared already from {previous}; use another data_dir, or --overwrite "
                "(bleedjax data prepare)"
            )
    if remote:
        # An object store has no rename to swap a finished build in: an --overwrite there removes
        # the old dataset before it builds the new one.
        if target.exists():
            target.rmtree()
        _build(get_builder(builder, data_dir=data_dir, **settings), root, block_seconds)
        return data_root
    data_root.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".bleedjax-prepare-", dir=data_root))
    try:
        fresh = get_builder(builder, data_dir=staging, **settings)
        _build(fresh, root, block_seconds)
        _swap_into_place(pathlib.Path(fresh.data_dir), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return data_root


def _build(dataset: tfds.core.DatasetBuilder, root: pathlib.Path, block_seconds: float) -> None:
    """TFDS's ``download_and_prepare`` from the stems in ``root``, its errors as one line."""
    try:
        dataset.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
    except AssertionError as error:  # TFDS's checks, e.g. a split with no examples
        message = " ".join(str(error).split())
        raise SessionError(f"{root}: no dataset prepared ({message}); are the sessions shorter than "
                           f"one block of {block_seconds:g} s?") from None
    except SessionError as error:  # `data prepare` has no --pad to suggest
        raise without_pad_hint(error, "(the stems of a session must be equally long: trim them)") from None


def _swap_into_place(built: pathlib.Path, target: pathlib.Path) -> None:
    """Moves a dataset built beside ``target`` onto it by renames. A build that fails (bad stems,
    an interruption) is never swapped in, so ``--overwrite`` keeps the old dataset until the new
    one is complete (it once deleted the old one first)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    replaced = target.with_name(f".{target.name}.replaced")
    shutil.rmtree(replaced, ignore_errors=True)
    if target.exists():
        os.replace(target, replaced)
    os.replace(built, target)
    shutil.rmtree(replaced, ignore_errors=True)


def prepare_from_config(data_config, *, overwrite: bool = False) -> pathlib.Path:
    """:func:`prepare` with the settings of a ``configs/data.py`` config, plus the RIR bank when
    ``augmentation == "room"``; returns the data_dir."""
    path = prepare(
        data_config.builder, manual_dir=data_config.manual_dir, data_dir=data_config.data_dir or None,
        sample_rate=data_config.sample_rate, channels=data_config.channels,
        block_seconds=data_config.block_seconds, overwrite=overwrite,
    )
    if data_config.augmentation == "room":
        rir_bank.prepare(rir_bank.config_from(data_config), resolve_data_dir(data_config.data_dir))
    return path


def data_source(data_config, split: str):
    """``tfds.data_source`` of a prepared dataset's split (random access, decoded NumPy dicts).

    Raises:
        ValueError: naming the folder, when the dataset or the split is not prepared.
    """
    dataset = builder_from_config(data_config)
    if not dataset.is_prepared():
        raise ValueError(
            f"{dataset.data_dir}: dataset not prepared; run `bleedjax data prepare --builder "
            f"{data_config.builder} --manual-dir PATH` with the same data_dir, sample rate, "
            "channels and block length"
        )
    if split not in dataset.info.splits:
        raise ValueError(f"{dataset.data_dir}: no split {split!r} (has {', '.join(dataset.info.splits)})")
    return tfds.data_source(
        data_config.builder, split=split, data_dir=resolve_data_dir(data_config.data_dir), download=False,
        builder_kwargs={"config": dataset.builder_config, "file_format": "array_record"},
    )
