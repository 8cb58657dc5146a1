"""Settings shared by the neural model configs (``tunet.py``, ``cae.py``): data, optimiser,
training loop, and the ``runlocal`` (tiny CPU run) and ``bundled`` variants."""

import pathlib

import ml_collections


def parse_variant(arg: str, variants: tuple[str, ...]) -> str:
    """The config argument (``configs/tunet.py:runlocal`` gives ``"runlocal"``); ``""`` is the paper."""
    if arg and arg not in variants:
        raise ValueError(f"unknown config variant {arg!r}; choose from {', '.join(variants)} or none")
    return arg


def data_config() -> ml_collections.ConfigDict:
    """The issue-5 data config (``configs/data.py``): builder, bleed augmentation, batch size."""
    from bleedjax.configs import data

    return data.get_config()


def optimizer_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.learning_rate = 1e-3  # peak, after warm-up
    config.warmup_steps = 1000
    config.schedule = "cosine"  # "cosine" decays to 0 at num_train_steps; "constant"
    config.clip_norm = 1.0  # global gradient norm; 0 turns clipping off
    config.weight_decay = 0.0  # > 0 gives AdamW
    return config


def training_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.num_train_steps = 100_000
    config.checkpoint_every = 1000
    config.keep_checkpoints = 3
    config.log_every = 100
    config.eval_every = 5000
    config.eval_batches = 8
    config.eval_split = "validation"  # held-out split of the data pipeline
    config.eval_filter_length = 512  # BSS Eval distortion filter taps for SDR/SIR
    config.seed = 0
    config.distributed = False  # jax.distributed.initialize() (also BLEEDJAX_DISTRIBUTED=1)
    return config


def demo_stems() -> str:
    """The rendered stems shipped with the package (``bleedjax/assets/demo``: Bach, BWV 80/8)."""
    import bleedjax.assets

    return str(pathlib.Path(bleedjax.assets.__file__).parent / "demo")


def make_runlocal(config: ml_collections.ConfigDict) -> None:
    """A few fast steps on CPU: short blocks at a low rate, a batch that divides 8 devices, the
    package's demo stems (prepared on first use; no held-out split, so evaluation reads the train
    split)."""
    config.data.manual_dir = demo_stems()
    config.data.sample_rate = 8000
    config.data.block_seconds = 0.5
    config.data.global_batch_size = 8
    config.data.read_threads = 1
    config.data.prefetch_batches = 0
    config.optimizer.warmup_steps = 2
    config.training.num_train_steps = 20
    config.training.checkpoint_every = 5
    config.training.keep_checkpoints = 2
    config.training.log_every = 1
    config.training.eval_every = 10
    config.training.eval_batches = 1
    config.training.eval_filter_length = 32
    config.training.eval_split = "train"


def make_bundled(config: ml_collections.ConfigDict) -> None:
    """The shipped model: the project's rendered stems at 22.05 kHz, tens of minutes of training
    on two (shared) CPU cores.

    ``data.manual_dir`` is a folder with ``train/`` (for the t-UNet: eight Bach chorales other
    than the demo's, rendered by ``scripts/render_demo_audio.py --piece training``) and
    ``validation/quartet`` (``benchmarks/audio/string_quartet``);
    ``bleedjax/assets/tunet/README.md`` has the commands.
    Blocks of 4 s are the shortest that five poolings by 9 accept at this rate.
    """
    config.data.manual_dir = "bundled_stems"
    config.data.sample_rate = 22050
    config.data.block_seconds = 4.0
    config.data.global_batch_size = 8
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 50
    config.training.num_train_steps = 400
    config.training.checkpoint_every = 100
    config.training.keep_checkpoints = 2
    config.training.log_every = 10
    config.training.eval_every = 200
    config.training.eval_batches = 1
