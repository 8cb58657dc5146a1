"""t-UNet (Rajesh R & Rajan, WASPAA 2023): model, loss, data, optimiser and training settings.

``bleedjax train --config configs/tunet.py --workdir DIR`` trains the paper's model;
``configs/tunet.py:runlocal`` is a tiny model and a few steps for CPU runs and tests;
``configs/tunet.py:bundled`` is the small model shipped in ``bleedjax/assets/tunet/``, trained on
the project's own rendered stems (see that folder's README for the exact command).
"""

import ml_collections
from bleedjax.configs import training_common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variant = training_common.parse_variant(arg, ("runlocal", "bundled"))
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.name = "tunet"
    config.model.num_tracks = 4  # J
    config.model.channels = (16, 32, 64, 128, 512)  # five conv blocks along time
    config.model.kernel_size = 4
    config.model.pool = 9  # max-pooling by 9 after each block
    config.model.dense = (512, 128, 64, 32)  # then J² outputs, ReLU so that Λ ≥ 0
    config.model.frequency_bands = 1  # 1: scalar Λ per pair (paper); >1: Λ per STFT band
    # 0: the paper's head on the flattened track features. > 0: one head per track pair that also
    # sees that pair's level-ratio histograms with this many bins (bleedjax.models.pair_features).
    config.model.pair_histogram_bins = 0
    config.model.n_fft = 2048
    config.model.hop = 512
    # Cleaning with Λ̂ (bleedjax.models.inference): "pinv" is the paper's pinv(Λ̂) X; "wiener" a
    # soft mask from the power model |X_i|² = Σ_j Λ̂_ij² P_j, insensitive to bleed delays.
    config.model.demix = "pinv"

    # "matrix": MSE against X·pinv(S) (paper); "gains": MSE against the augmentation's bleed gains
    # (delay-insensitive); "signal": through the STFT
    config.loss = "matrix"

    config.data = training_common.data_config()
    config.data.num_tracks = config.model.num_tracks
    config.optimizer = training_common.optimizer_config()
    config.training = training_common.training_config()

    if variant == "runlocal":
        config.model.channels = (4, 4, 8, 8, 16)
        config.model.pool = 4
        config.model.dense = (16, 8)
        config.model.n_fft = 256
        config.model.hop = 64
        training_common.make_runlocal(config)
    elif variant == "bundled":
        config.model.channels = (8, 16, 32, 64, 128)
        config.model.dense = (128, 64, 32)
        config.model.pair_histogram_bins = 37  # 2 dB bins over -60…+12 dB
        training_common.make_bundled(config)
        config.data.augmentation = "linear-seipel"
        config.loss = "gains"
        config.model.demix = "wiener"
        config.training.num_train_steps = 800
    return config
