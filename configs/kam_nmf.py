"""KAM + NMF (Fano Yela et al., ICASSP 2017) for coughs, knocks and claps in a music track.

``bleedjax reduce SESSION --method kam-nmf --dictionary dict.npz`` (a dictionary from
``bleedjax learn-dictionary``); ``--set key=value`` overrides single values. Sizes in frames are at
the STFT below: 2048 / 512 at 22.05 kHz (93 ms frames, 23 ms hop), so ``min_separation = 43`` is
about 1 s. ``variant`` "nmf" and "kam" are the ablations of the benchmark ("kam" has no
streamed path for long tracks). ``--set auto_k=True``
chooses ``k`` per track among ``k_candidates`` by k-NN hubness (:mod:`bleedjax.hubness`: the
largest candidate whose k-occurrence skewness is at most ``hubness_threshold``).
"""

import dataclasses

import ml_collections

from bleedjax.methods.kam_nmf import Settings
from bleedjax.methods.kam_nmf_long import LongSettings


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(dataclasses.asdict(Settings()))
    config.dictionary = ""  # the interference dictionary .npz (required)
    config.beta = 1.0  # Kullback-Leibler NMF
    config.music_components = 32
    config.k = 9  # neighbours of the similarity kernel
    config.auto_k = False  # True: k from k_candidates by hubness (Fano Yela et al., LVA/ICA 2018)
    config.k_candidates = (3, 5, 7, 9, 11, 15, 19)
    config.hubness_threshold = 1.0  # largest acceptable skewness of the k-occurrences
    # Long tracks (reduce --streaming, or above 2^23 samples) stream through blocks of this many
    # frames, with the spectrogram on disk (bleedjax/methods/kam_nmf_long.py); same result.
    config.block_frames = LongSettings().block_frames
    config.context = 2  # frames of temporal context on either side
    return config
