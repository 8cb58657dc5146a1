"""CAE (Rajesh R & Rajan, WASPAA 2023): a convolutional autoencoder on magnitude frames, one model
per stem type.

``bleedjax train --config configs/cae.py --workdir DIR`` trains the paper's model;
``configs/cae.py:runlocal`` is a tiny model and a few steps for CPU runs and tests;
``configs/cae.py:bundled`` is a small CAE trained on CPU on the same rendered stems and bleed as
the bundled t-UNet (``configs/tunet.py:bundled``); the README's "Neural models: quality" has the
command and what it gives.
"""

import ml_collections
from bleedjax.configs import training_common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variant = training_common.parse_variant(arg, ("runlocal", "bundled"))
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.name = "cae"
    config.model.num_tracks = 4  # J of the training sessions; the CAE cleans one track at a time
    config.model.n_fft = 2048
    config.model.hop = 512
    config.model.context_frames = 3  # consecutive magnitude frames in, the middle one out
    config.model.conv_channels = (32, 64)  # with batch norm
    config.model.bottleneck = 100
    config.model.stem = "vocals"  # the stem type (or track name) this model cleans
    # Context windows per track and training example, evenly spaced (0: every frame, the paper)
    config.model.train_frames = 0

    config.loss = "magnitude"  # MSE on magnitudes; reconstruction uses the mixture phase

    config.data = training_common.data_config()
    config.data.num_tracks = config.model.num_tracks
    # model.stem is looked up in track_names. The paper trains one CAE per MUSDB18-HQ stem: the
    # musdb18hq builder's stem order (bleedjax.data.musdb18hq.STEMS), four stems, all selected.
    config.data.track_names = ()
    if not variant:
        config.data.builder = "musdb18hq"
        config.data.track_names = ("drums", "bass", "other", "vocals")
    config.optimizer = training_common.optimizer_config()
    config.training = training_common.training_config()

    if variant == "runlocal":
        config.model.n_fft = 256
        config.model.hop = 64
        config.model.conv_channels = (4, 8)
        config.model.bottleneck = 8
        config.model.stem = "any"  # synthetic test batches have no track names
        training_common.make_runlocal(config)
    elif variant == "bundled":
        # The paper's shape at a size two shared CPU cores train in 50 minutes: 1024-point frames
        # (513 bins), 8/16 channels, the paper's bottleneck of 100 (two dense layers of
        # 24 592 x 100 instead of 196 672 x 100), 16 windows per track and example.
        config.model.n_fft = 1024
        config.model.hop = 256
        config.model.conv_channels = (8, 16)
        config.model.stem = "any"  # the rendered ensembles differ per chorale: one model for all
        config.model.train_frames = 16
        training_common.make_bundled(config)
        config.data.augmentation = "linear-seipel"
        # Every track active: silent slots would give all-zero windows, which only shift batch
        # norm's statistics away from those of real microphones (every track at inference).
        config.data.min_active_tracks = config.data.num_tracks
        config.optimizer.warmup_steps = 100
        config.training.num_train_steps = 1200
        config.training.checkpoint_every = 250
        config.training.log_every = 25
        config.training.eval_every = 400
    return config
