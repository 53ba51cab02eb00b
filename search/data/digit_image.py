"""Turn a photo or drawing of one digit into a 28x28 MNIST-style image, the way MNIST was made.

MNIST digits are light on a dark background, scaled (keeping the aspect ratio) to fit a 20x20
box, and placed in 28x28 so that their centre of mass is at the centre. Any image is brought to
that form: grayscale, inverted when its background is light, cropped to the digit, scaled into
the box and centred by centre of mass.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from search.config import IMAGE_SIDE as SIDE
from search.errors import UserError

BOX = 20
# Where MNIST puts the centre of mass, in pixel-index coordinates (measured on the embedded
# sample: 13.99 and 14.00, spread 0.3 px).
CENTRE = 14.0
# Ink fainter than this fraction of the strongest stroke is treated as background noise
# (JPEG ringing, paper texture), so it neither widens the crop nor pulls the centre of mass.
NOISE_FLOOR = 0.1
# Largest image read: 4096x4096 (16.8 megapixels) is far more than one digit needs. The size is
# checked from the file's header, before any pixel is decoded, so a small file that claims
# gigapixels (a decompression bomb) costs nothing.
MAX_PIXELS = 4096 * 4096
TOO_LARGE = "images of more than 16.8 megapixels (4096x4096) are refused; crop or scale it down to the digit"


def read_image(path: str | Path) -> np.ndarray:
    """A PNG/JPEG (or anything Pillow reads) as (H, W) float64 gray levels 0..255; UserError naming the file."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its own limit and twice that; here both are refusals
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                check_size(path, image.size)
                image.load()
                image = ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"{path}: {TOO_LARGE}") from None
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not an image") from None
    except PermissionError:
        raise UserError(f"{path}: cannot be read (permission denied)") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image format Pillow knows; give a PNG or JPEG file") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt files
        raise UserError(f"{path}: not a readable image ({err}); give a PNG or JPEG file") from None
    return to_gray(image)


def check_size(path: Path, size: tuple[int, int]) -> None:
    """Refuse an image of more than MAX_PIXELS pixels, from the (width, height) its header claims."""
    width, height = size
    if width * height > MAX_PIXELS:
        raise UserError(f"{path}: {width}x{height} pixels; {TOO_LARGE}")


def to_gray(image: Image.Image) -> np.ndarray:
    """(H, W) float64 gray levels 0..255; transparency is flattened onto the colour opposite the ink."""
    if image.mode.startswith("I"):  # 16/32-bit grayscale
        values = np.asarray(image, dtype=np.float64)
        return values * (255 / 65535) if values.max() > 255 else values
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        pixels = np.asarray(image.convert("LA"), dtype=np.float64)
        gray, alpha = pixels[..., 0], pixels[..., 1] / 255
        # A transparent background takes the colour opposite the visible strokes.
        ink = (gray * alpha).sum() / max(alpha.sum(), 1e-9)
        backdrop = 255.0 if ink < 128 else 0.0
        return gray * alpha + backdrop * (1 - alpha)
    return np.asarray(image.convert("L"), dtype=np.float64)


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """(H, W) gray levels of any size and polarity -> (28, 28) uint8 in MNIST's form; ValueError if blank."""
    gray = np.asarray(gray, dtype=np.float64)
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise ValueError(f"expected a 2-D grayscale image, got shape {gray.shape}")
    ink = _ink(gray)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        raise ValueError("no digit found: the image is blank")
    digit = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return _centre_by_mass(_fit_box(digit))


def _ink(gray: np.ndarray) -> np.ndarray:
    """Stroke strength >= 0 above the background, whichever polarity the image has."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    ink = gray - background if background < 127.5 else background - gray
    ink = np.clip(ink, 0, None)
    peak = ink.max()
    if peak <= 0:
        return ink
    ink[ink < NOISE_FLOOR * peak] = 0
    return ink


def _fit_box(digit: np.ndarray) -> np.ndarray:
    """Scale so the longer side is BOX pixels, keeping the aspect ratio; strongest stroke 255."""
    height, width = digit.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # LANCZOS antialiases when shrinking, as MNIST's resampling did; it can ring below zero.
    resized = np.asarray(
        Image.fromarray(digit.astype(np.float32)).resize(size, Image.Resampling.LANCZOS), dtype=np.float64
    )
    resized = np.clip(resized, 0, None)
    peak = resized.max()
    return resized * (255 / peak) if peak > 0 else resized


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste `digit` into SIDE x SIDE with its centre of mass at (CENTRE, CENTRE), clipping any overhang."""
    height, width = digit.shape
    mass = digit.sum()
    centre_y = (digit.sum(axis=1) @ np.arange(height)) / mass
    centre_x = (digit.sum(axis=0) @ np.arange(width)) / mass
    top, left = int(round(CENTRE - centre_y)), int(round(CENTRE - centre_x))
    canvas = np.zeros((SIDE, SIDE))
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, SIDE), min(left + width, SIDE)
    canvas[y0:y1, x0:x1] = digit[y0 - top : y1 - top, x0 - left : x1 - left]
    return np.rint(np.clip(canvas, 0, 255)).astype(np.uint8)


def load_digit(path: str | Path) -> np.ndarray:
    """Read an image file and bring it to MNIST's form: (28, 28) uint8; UserError naming the file."""
    gray = read_image(path)
    try:
        return to_mnist(gray)
    except ValueError as err:
        raise UserError(f"{path}: {err}") from None
