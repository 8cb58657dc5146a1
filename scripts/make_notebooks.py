"""Writes notebooks/quickstart.ipynb and notebooks/training.ipynb from the cells below (kept as code
so diffs stay readable)."""

import pathlib

import nbformat

QUICKSTART = [
    ("markdown", """# bleedjax quickstart

Every close microphone also hears its neighbours. This notebook simulates that bleed on the bundled
five-instrument example (Bach, BWV 80/8, rendered with a General MIDI soundfont), removes it with
Seipel & Lerch's spectral subtraction, and scores the result with BSS Eval."""),
    ("code", """import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Audio, display

from bleedjax import demo, evaluate, sessions, signal, simulation
from bleedjax.methods import spectral_subtraction

stems = sessions.read_session(demo.bundled_stems())
print(stems.track_names, stems.sample_rate, stems.audio.shape)"""),
    ("markdown", """## 1. Simulate bleed
A symmetric mixing matrix with ones on the diagonal and off-diagonal gains up to −12 dB, free-field
delays from `a = 1/r²`, all tracks normalised by the loudest (Seipel & Lerch, Sec. 3.1)."""),
    ("code", """sim = simulation.simulate_linear(jnp.asarray(stems.audio), key=jax.random.key(0),
                                 max_crosstalk_db=-12.0, sample_rate=stems.sample_rate)
print(np.round(np.asarray(sim.gains), 3))"""),
    ("markdown", "## 2. Remove it\nOne jitted call: STFT, λ by momentum descent on the Gram matrix, subtraction, iSTFT."),
    ("code", """result = spectral_subtraction.reduce_session(sim.mics)
print(np.round(np.asarray(result.lam), 3))
print("iterations per target track:", np.asarray(result.iterations))"""),
    ("markdown", "## 3. Score it (BSS Eval v3, dB)"),
    ("code", """before = evaluate.score(sim.references, sim.mics)
after = evaluate.score(sim.references, result.cleaned)
rows = {name: {f"{m} {when}": float(scores[m][i]) for m in ("sdr", "sir")
               for when, scores in (("in", before), ("out", after))}
        for i, name in enumerate(stems.track_names)}
print(evaluate.format_table(rows, ["sdr in", "sdr out", "sir in", "sir out"]))
assert np.nanmean(after["sir"]) > np.nanmean(before["sir"])"""),
    ("markdown", "## 4. Look and listen\nThe true bleed (A − I) against the estimated λ, then the horn before and after."),
    ("code", """fig, axes = plt.subplots(1, 2, figsize=(9, 4))
for axis, matrix, title in zip(axes, [np.asarray(sim.gains) - np.eye(5), np.asarray(result.lam)],
                               ["true bleed (A − I)", "estimated λ"]):
    image = axis.imshow(matrix, vmin=0, vmax=0.5, cmap="magma")
    axis.set_title(title)
    axis.set_xticks(range(5), stems.track_names, rotation=45)
    axis.set_yticks(range(5), stems.track_names)
fig.colorbar(image, ax=axes)
plt.show()

horn = stems.track_names.index("horn.flac")
fig, axes = plt.subplots(1, 3, figsize=(14, 3.5), sharey=True)
for axis, audio, title in zip(axes, [sim.mics[horn], result.cleaned[horn], sim.references[horn]],
                              ["with bleed", "cleaned", "reference"]):
    db = 20 * np.log10(np.maximum(np.abs(np.asarray(signal.stft(audio, n_fft=2048, hop=512))), 1e-6))
    axis.imshow(db, origin="lower", aspect="auto", vmin=db.max() - 80, vmax=db.max(), cmap="viridis")
    axis.set_ylim(0, 400)
    axis.set_title(f"horn: {title}")
plt.show()"""),
    ("code", """for label, audio in [("with bleed", sim.mics[horn]), ("cleaned", result.cleaned[horn])]:
    print(label)
    display(Audio(np.asarray(audio), rate=stems.sample_rate))"""),
    ("markdown", """## 5. The same from the command line
```
bleedjax simulate bleedjax/assets/demo --out sim --max-crosstalk-db -12
bleedjax reduce sim/session --out cleaned
bleedjax evaluate sim/references cleaned --json scores.json
```"""),
]

TRAINING = [
    ("markdown", """# Training a t-UNet on CPU

The t-UNet of Rajesh R & Rajan (WASPAA 2023) reads the microphone waveforms and outputs the bleed
matrix Λ; the cleaned tracks are `pinv(Λ) X`. This notebook trains a tiny one for a few steps on the
bundled Bach stems with bleed made on the fly (the Grain pipeline), plots the loss, and cleans a
simulated session with it. It is the `runlocal` variant of `configs/tunet.py`; the same run from
the command line is

```
bleedjax train --config configs/tunet.py:runlocal --workdir runs/tiny
```"""),
    ("code", """import pathlib
import shutil
import tempfile

import matplotlib.pyplot as plt
import numpy as np

from bleedjax import demo, evaluate, reduce, simulate_folder, train, training_log
from bleedjax.configs import tunet
from bleedjax.methods import neural

work = pathlib.Path(tempfile.mkdtemp(prefix="bleedjax-training-"))
config = tunet.get_config("runlocal")
config.data.data_dir = str(work / "tfds")  # the prepared dataset (ArrayRecord) goes here
config.training.num_train_steps = 40
config.training.eval_every = 20
print(config.model)"""),
    ("markdown", """## 1. Train
`train_and_evaluate` prepares the dataset from `config.data.manual_dir` (the bundled stems) on first
use, builds the model and an Adam optimiser with warm-up and cosine decay, and runs jitted steps
on a `('data',)` device mesh. Every `checkpoint_every` steps it saves model, optimiser, step and
data-iterator state with Orbax; running it again on the same workdir resumes exactly."""),
    ("code", """result = train.train_and_evaluate(config, work / "run")
print({k: round(v, 4) for k, v in result["train"].items()})
print({k: round(v, 2) for k, v in result["eval"].items()})"""),
    ("markdown", "## 2. The loss curve\n`metrics.jsonl` has one line per logged step (TensorBoard files are in `run/tensorboard`)."),
    ("code", """records = training_log.read_metrics(work / "run")
train_records = [r for r in records if r["split"] == "train"]
eval_records = [r for r in records if r["split"] == "eval"]
fig, axis = plt.subplots(figsize=(7, 3.5))
axis.plot([r["step"] for r in train_records], [r["loss"] for r in train_records], label="train")
axis.plot([r["step"] for r in eval_records], [r["loss"] for r in eval_records], "o", label="eval")
axis.set_xlabel("step")
axis.set_ylabel("MSE of Λ")
axis.set_yscale("log")
axis.legend()
plt.show()"""),
    ("markdown", """## 3. Clean a session with it
Four of the bundled stems with simulated linear bleed (Seipel & Lerch, up to −12 dB), cleaned with
`--method tunet --checkpoint` (the model estimates Λ at its own 8 kHz; the demixing runs at the
session's 44.1 kHz), then scored with BSS Eval. A model this small and this briefly trained helps
only a little; `bleedjax reduce --method tunet` without `--checkpoint` uses the bundled model."""),
    ("code", """stems = work / "stems"
stems.mkdir()
for name in ["flute.flac", "oboe.flac", "horn.flac", "cello.flac"]:
    shutil.copy(demo.bundled_stems() / name, stems / name)
simulate_folder.simulate_folder(stems, work / "sim", bleed="linear", max_crosstalk_db=-12.0, seed=0)
settings = neural.with_checkpoint("tunet", neural.default_config("tunet"), str(work / "run"))
reduce.reduce_folders([work / "sim" / "session"], work / "cleaned", method="tunet", config=settings)

before = evaluate.evaluate_folders(work / "sim" / "references", work / "sim" / "session")
after = evaluate.evaluate_folders(work / "sim" / "references", work / "cleaned")
rows = {name: {"sdr in": before["tracks"][name]["sdr"], "sdr out": after["tracks"][name]["sdr"],
               "sir in": before["tracks"][name]["sir"], "sir out": after["tracks"][name]["sir"]}
        for name in after["tracks"]}
print(evaluate.format_table(rows, ["sdr in", "sdr out", "sir in", "sir out"]))"""),
    ("markdown", """## 4. The same from the command line
```
bleedjax train --config configs/tunet.py:runlocal --workdir runs/tiny
bleedjax simulate stems --out sim --max-crosstalk-db -12
bleedjax reduce sim/session --out cleaned --method tunet --checkpoint runs/tiny
bleedjax evaluate sim/references cleaned
```
On a TPU pod slice: `tpu/README.md`."""),
]


def build(cells):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, source in cells:
        maker = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        notebook.cells.append(maker(source))
    return notebook


if __name__ == "__main__":
    folder = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
    nbformat.write(build(QUICKSTART), folder / "quickstart.ipynb")
    nbformat.write(build(TRAINING), folder / "training.ipynb")
