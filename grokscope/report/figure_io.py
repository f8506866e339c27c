"""Making and saving the report's figures: one place, one convention.

Figures are plain :class:`matplotlib.figure.Figure` objects with an Agg canvas, never pyplot's,
so nothing here (or in the modules using it) touches pyplot's global state or backend, and no
figure has to be closed: it is freed like any other object once dropped.

Every PNG is rendered at :data:`DPI` with ``bbox_inches="tight"`` into memory and written with
:func:`grokscope.store.rundir.atomic_write`, so a reader never sees half a file; the animated GIF
is rendered into a temporary folder and written the same way.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

from matplotlib.animation import Animation, PillowWriter
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from grokscope.store.rundir import atomic_write

DPI = 150  # every PNG of the package
BBOX = "tight"  # crop to the drawn content (labels and legends outside the axes included)
GIF_DPI = 80  # animations: many frames, kept small


def new_figure(**kwargs) -> Figure:
    """A Figure (``figsize``, ``layout``, ... as for :class:`Figure`) with an Agg canvas."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, layout=None, **kwargs):
    """``(fig, axes)`` as ``plt.subplots`` returns them, without pyplot: ``figsize`` and
    ``layout`` go to the figure, the rest (``sharex``, ``squeeze``, ...) to
    :meth:`Figure.subplots`."""
    fig = new_figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig: Figure, path: Path | str) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parent folders made) atomically; returns the path."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches=BBOX)
    atomic_write(path, buf.getvalue())
    return path


def save_animation(anim: Animation, path: Path | str, fps: int = 6, dpi: int = GIF_DPI) -> Path:
    """Write ``anim`` as an animated GIF (Pillow) at ``path`` atomically; returns the path."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="grokscope-gif-") as tmp:
        draft = Path(tmp) / "animation.gif"  # Pillow picks the format from the suffix
        anim.save(draft, writer=PillowWriter(fps=fps), dpi=dpi)
        atomic_write(path, draft.read_bytes())
    return path
