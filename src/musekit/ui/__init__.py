"""The web UI (`musekit ui`; ``musekit.ui.app`` needs the `ui` extra, gradio) and what its buttons do (``Studio``,
no gradio needed)."""

from musekit.ui.studio import Result, Studio

__all__ = ["Result", "Studio"]
