"""Writes notebooks/quickstart.ipynb, training.ipynb and differentiable_bleed.ipynb from the cells
below (kept as code so diffs stay readable; cell ids are hashes of the cells, so that writing them
again changes only the cells that changed)."""

import hashlib
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
    ("markdown", """## 5. Clean up
Everything above was written under one temporary folder (about 11 MB: the prepared dataset, the
checkpoints, the simulated and cleaned sessions). Delete it, or skip this cell to keep it."""),
    ("code", """print(f"removing {work}")
shutil.rmtree(work)"""),
]


DIFFERENTIABLE = [
    ("markdown", """# A differentiable bleed model

Real bleed arrives late (about 3 ms per metre) and coloured by the room. bleedjax models it as a
pytree of parameters, per microphone *i* and source *j* a gain g_ij, a fractional delay τ_ij and an
optional per-band colouration, and fits it to the microphones alone by gradient descent
(`bleedjax.bleed_model`, `bleedjax.bleed_fit`). This notebook renders three instruments in a
shoebox room of known geometry, fits the model and compares the recovered gains and delays with the
geometry, then pushes one gradient through the whole chain (source → bleed → STFT → cost) to
recover a microphone distance."""),
    ("code", """import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from bleedjax import bleed_model, demo, room, sessions, signal
from bleedjax.methods import differentiable
from bleedjax.simulation import SPEED_OF_SOUND

stems = sessions.read_session(demo.bundled_stems())
rate = stems.sample_rate
names = ["flute.flac", "horn.flac", "cello.flac"]
dry = stems.audio[[stems.track_names.index(n) for n in names], rate : 4 * rate]
print(names, rate, dry.shape)"""),
    ("markdown", """## 1. A room with known geometry
Each instrument has a close microphone 0.5 m in front of it; RT60 0.3 s (pyroomacoustics image
sources). The truth for the model is the direct path: the delay of source *j* at microphone *i*
relative to its own microphone, and the 1/r amplitude ratio d_jj / d_ij."""),
    ("code", """geometry = room.random_geometry(3, seed=1, rt60=0.3)
sim = room.simulate_room(dry, sample_rate=rate, geometry=geometry)
sources, mics = np.asarray(geometry.source_positions), np.asarray(geometry.mic_positions)
distance = np.linalg.norm(mics[:, None, :] - sources[None, :, :], axis=-1)
true_delay_ms = (distance - np.diag(distance)[None, :]) / SPEED_OF_SOUND * 1e3
true_gain = np.diag(distance)[None, :] / distance
off = ~np.eye(3, dtype=bool)

fig, axis = plt.subplots(figsize=(5, 4))
axis.scatter(sources[:, 0], sources[:, 1], marker="*", s=150, label="sources")
axis.scatter(mics[:, 0], mics[:, 1], marker="o", label="microphones")
for name, (x, y, _) in zip(names, sources):
    axis.annotate(name.split(".")[0], (x, y), textcoords="offset points", xytext=(5, 5))
axis.set_xlim(0, geometry.dimensions[0]); axis.set_ylim(0, geometry.dimensions[1])
axis.set_aspect("equal"); axis.legend(); axis.set_title("room (top view, metres)")
plt.show()"""),
    ("markdown", """## 2. Fit the model from the microphones alone
GCC-PHAT initialises the delays and spectral subtraction's λ the gains; Adam then minimises the
whitened residual energy of complex-domain subtraction of the modelled bleed, alternating with
per-frequency unmixing (one jitted call)."""),
    ("code", """settings = differentiable.Settings(rounds=3, steps=100)
fit = differentiable.fit_session(jnp.asarray(sim.mics), settings)
gains = np.asarray(fit.params.gains)
delays_ms = np.asarray(fit.params.delays) / rate * 1e3
print("delay error (ms):", np.round(delays_ms[off] - true_delay_ms[off], 3))
print("gain error (dB): ", np.round(20 * np.log10(gains[off] / true_gain[off]), 2))

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
axes[0].scatter(true_delay_ms[off], delays_ms[off])
axes[0].plot([0, true_delay_ms.max()], [0, true_delay_ms.max()], "k--", lw=0.8)
axes[0].set(xlabel="true delay (ms)", ylabel="fitted delay (ms)", title="delays")
axes[1].scatter(20 * np.log10(true_gain[off]), 20 * np.log10(gains[off]), label="direct path (1/r)")
axes[1].scatter(20 * np.log10(sim.gains[off]), 20 * np.log10(gains[off]), marker="x",
                label="RMS with reverberation")
low = 20 * np.log10(min(true_gain[off].min(), sim.gains[off].min(), gains[off].min())) - 2
axes[1].plot([low, 0], [low, 0], "k--", lw=0.8)
axes[1].set(xlabel="true level (dB)", ylabel="fitted level (dB)", title="gains")
axes[1].legend()
plt.show()
assert np.abs(delays_ms[off] - true_delay_ms[off]).max() < 0.1"""),
    ("markdown", """The delays match the direct path to a few hundredths of a millisecond. The fitted gains
are the part of the bleed that is coherent with the reference: they lie 1–3 dB below the direct
path's 1/r ratio, because the reference (what the own microphone hears) also carries its own
reverberation, and further below the RMS ratio of the whole rendered bleed, most of which is late
reverberation. `bleedjax reduce --method differentiable` removes that remainder with a magnitude
stage after the phase-aware inversion.

## 3. One gradient through the whole chain
The horn, as its own microphone hears it, reaches a second microphone at an unknown distance *d*:
gain 1/d and delay d/c. The cost compares STFTs, so `jax.grad` runs through the fractional delay,
the STFT and the cost back to the distance. A magnitude cost (level and timing, smooth in *d*)
brings *d* close; the complex cost (phase, exact but oscillating in *d*) then pins it down."""),
    ("code", """horn = jnp.asarray(sim.references[1])
true_distance = 2.37

def render(d):
    params = bleed_model.flat(jnp.reshape(1.0 / d, (1, 1)), jnp.reshape(d / SPEED_OF_SOUND * rate, (1, 1)))
    return bleed_model.apply(params, horn[None], max_delay=600)[0]

heard = signal.stft(render(jnp.asarray(true_distance)), n_fft=2048, hop=512)

def magnitude_cost(d):
    return jnp.sum((jnp.abs(heard) - jnp.abs(signal.stft(render(d), n_fft=2048, hop=512))) ** 2) / jnp.sum(jnp.abs(heard) ** 2)

def complex_cost(d):
    return jnp.sum(jnp.abs(heard - signal.stft(render(d), n_fft=2048, hop=512)) ** 2) / jnp.sum(jnp.abs(heard) ** 2)

d = jnp.asarray(1.5)
step = 1e-3
numeric = (magnitude_cost(d + step) - magnitude_cost(d - step)) / (2 * step)
print(f"d/dd cost at {float(d)} m: jax.grad {float(jax.grad(magnitude_cost)(d)):.4f}, "
      f"central difference {float(numeric):.4f}")

trace = []
for cost, rate_, steps in [(magnitude_cost, 0.05, 150), (complex_cost, 0.002, 100)]:
    value_and_grad = jax.jit(jax.value_and_grad(cost))
    optimiser = optax.adam(rate_)
    state = optimiser.init(d)
    for _ in range(steps):
        value, grad = value_and_grad(d)
        updates, state = optimiser.update(grad, state)
        d = optax.apply_updates(d, updates)
        trace.append(float(d))
print(f"recovered distance {float(d):.4f} m (true {true_distance} m)")
fig, axis = plt.subplots(figsize=(6, 3))
axis.plot(trace); axis.axhline(true_distance, color="k", ls="--", lw=0.8)
axis.axvline(150, color="grey", lw=0.8)
axis.set(xlabel="Adam step (magnitude cost, then complex cost)", ylabel="distance (m)")
plt.show()
assert abs(float(d) - true_distance) < 0.01"""),
]


def build(cells):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, source in cells:
        maker = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        cell = maker(source)
        cell.id = hashlib.sha1(f"{len(notebook.cells)}:{source}".encode()).hexdigest()[:8]
        notebook.cells.append(cell)
    return notebook


if __name__ == "__main__":
    folder = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
    nbformat.write(build(QUICKSTART), folder / "quickstart.ipynb")
    nbformat.write(build(TRAINING), folder / "training.ipynb")
    nbformat.write(build(DIFFERENTIABLE), folder / "differentiable_bleed.ipynb")
