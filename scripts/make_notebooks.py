"""Writes notebooks/quickstart.ipynb from the cells below (kept as code so diffs stay readable)."""

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
