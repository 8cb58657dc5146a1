"""Training data: which TFDS builder, how it was prepared, bleed augmentation and the Grain pipeline.

Training configs embed this as ``config.data``; ``bleedjax.data.pipeline.make_iterator`` reads it.
``builder``, ``sample_rate``, ``channels`` and ``block_seconds`` name the prepared dataset
(``bleedjax data prepare``); the rest is applied on the fly.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # Dataset (bleedjax.data.builders): "multitrack_stems" (any folder of stem folders) or
    # "musdb18hq". data_dir "" is TFDS's default (~/tensorflow_datasets).
    config.builder = "multitrack_stems"
    config.data_dir = ""
    config.manual_dir = ""
    config.split = "train"
    config.sample_rate = 22050
    config.channels = 1  # stored channels per stem; the pipeline always yields mono tracks
    config.block_seconds = 10.0
    # Tracks per example (J). Sessions with more stems give a random subset of J stems per
    # example; sessions with fewer are padded with inactive (silent, masked) tracks.
    config.num_tracks = 4

    # Bleed augmentation (bleedjax.data.augment): "linear-paper" (diagonal U(0.6, 1),
    # off-diagonal U(0.05, 0.31)), "linear-seipel" (Seipel & Lerch 2018: symmetric, dB-limited,
    # free-field delays) or "room" (convolution with a pyroomacoustics impulse-response bank).
    config.augmentation = "linear-paper"
    config.paper_diagonal = (0.6, 1.0)
    config.paper_off_diagonal = (0.05, 0.31)
    config.seipel_crosstalk_db = (-18.0, -6.0)  # maximum crosstalk, drawn per example
    config.seipel_delays = True
    config.gain_db = (-6.0, 0.0)  # random gain per source
    config.min_active_tracks = 2  # active tracks are drawn from [min_active_tracks, num_tracks]
    # "host": the pipeline augments on the host CPU. "device": it yields stems, present and
    # position, and the training step calls bleedjax.data.pipeline.augment_batch on the device.
    config.augment_on = "host"
    # Near-silent blocks (any chosen stem below this RMS, dBFS) are dropped when drop_silent.
    config.drop_silent = False
    config.silence_threshold_db = -60.0

    # Room impulse-response bank (bleedjax.data.rir_bank), made once by `bleedjax data prepare
    # --rir-bank` and stored under data_dir.
    config.rir_rooms = 64
    config.rir_seconds = 1.0
    config.rir_rt60 = (0.25, 0.6)
    config.rir_seed = 0

    # Grain pipeline (bleedjax.data.pipeline). global_batch_size is split evenly over processes.
    # shuffle_seed -1: the seed given to make_iterator also sets the order.
    config.global_batch_size = 8
    config.shuffle_seed = -1
    config.worker_count = 0  # 0: in-process; > 0: Grain multiprocessing workers
    config.worker_buffer_size = 2
    config.read_threads = 2
    config.prefetch_batches = 2
    return config
