"""CAE (Rajesh R & Rajan, WASPAA 2023): a convolutional autoencoder on magnitude frames, one model
per stem type.

``bleedjax train --config configs/cae.py --workdir DIR`` trains the paper's model;
``configs/cae.py:runlocal`` is a tiny model and a few steps for CPU runs and tests.
"""

import ml_collections
from bleedjax.configs import training_common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variant = training_common.parse_variant(arg, ("runlocal",))
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

    config.loss = "magnitude"  # MSE on magnitudes; reconstruction uses the mixture phase

    config.data = training_common.data_config()
    config.data.num_tracks = config.model.num_tracks
    config.optimizer = training_common.optimizer_config()
    config.training = training_common.training_config()

    if variant == "runlocal":
        config.model.n_fft = 256
        config.model.hop = 64
        config.model.conv_channels = (4, 8)
        config.model.bottleneck = 8
        config.model.stem = "any"  # synthetic test batches have no track names
        training_common.make_runlocal(config)
    return config
