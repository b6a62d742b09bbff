"""A chart as a still image: PNG or SVG bytes rendered by vl-convert (no browser needed)."""

import io
from pathlib import Path

IMAGE_FORMATS = {"png": "image/png", "svg": "image/svg+xml"}


def chart_image(chart, fmt="png", scale=2):
    """A chart as PNG or SVG bytes, rendered by vl-convert (no browser needed); `scale` multiplies
    a PNG's pixels. Interactive parts (zoom, legend toggles) are dropped from a still image."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {fmt!r}")
    if fmt == "png":
        buffer = io.BytesIO()
        chart.save(buffer, format="png", scale_factor=scale)
        return buffer.getvalue()
    buffer = io.StringIO()
    chart.save(buffer, format="svg")
    return buffer.getvalue().encode("utf-8")


def save_png(chart, path, scale=2):
    """Render with vl-convert (no browser needed)."""
    Path(path).write_bytes(chart_image(chart, "png", scale))
