"""MNIST-style preprocessing of arbitrary digit images, checked against real MNIST digits re-rendered."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from search.data.digit_image import BOX, CENTRE, MAX_PIXELS, load_digit, read_image, to_mnist
from search.data.digits import load_digits
from search.errors import UserError


@pytest.fixture(scope="module")
def mnist():
    digits = load_digits(None)
    return digits.train_images[:40]


def correlation_up_to_one_pixel(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two 28x28 images, best over shifts of a by at most one pixel."""
    best = -1.0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = np.roll(a.astype(float), (dy, dx), axis=(0, 1))
            best = max(best, np.corrcoef(shifted.ravel(), b.astype(float).ravel())[0, 1])
    return best


def render(
    digit: np.ndarray, scale: int, canvas: tuple[int, int], at: tuple[int, int], light_background: bool
) -> np.ndarray:
    """The digit enlarged `scale` times (bicubic), placed at `at` on a bigger canvas, in either polarity."""
    side = 28 * scale
    big = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC))
    image = np.zeros(canvas, dtype=np.uint8)
    image[at[0] : at[0] + side, at[1] : at[1] + side] = big
    return 255 - image if light_background else image


@pytest.mark.parametrize("light_background", [False, True])
@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_rendered_digits_come_back_close_to_the_original(mnist, tmp_path, light_background, suffix):
    scores = []
    for index, digit in enumerate(mnist):
        path = tmp_path / f"{index}.{suffix}"
        Image.fromarray(render(digit, 4, (170, 230), (30, 70), light_background)).save(path, quality=90)
        scores.append(correlation_up_to_one_pixel(load_digit(path), digit))
    assert min(scores) > 0.85
    assert np.median(scores) > 0.97


@pytest.mark.parametrize("scale", [2, 7])
def test_other_sizes_and_an_off_centre_digit(mnist, scale):
    digit = mnist[3]
    image = render(digit, scale, (28 * scale + 40, 28 * scale + 90), (5, 80), light_background=True)
    assert correlation_up_to_one_pixel(to_mnist(image), digit) > 0.9


def test_an_mnist_digit_passes_through_almost_unchanged(mnist):
    for digit in mnist[:10]:
        assert correlation_up_to_one_pixel(to_mnist(digit), digit) > 0.99


def test_the_digit_fits_a_20_pixel_box_centred_by_mass():
    image = np.full((300, 120), 230.0)  # a tall bar, dark on light, near the top left
    image[10:200, 20:50] = 10.0
    out = to_mnist(image).astype(float)
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert rows[-1] - rows[0] + 1 == BOX
    assert cols[-1] - cols[0] + 1 == round(30 * BOX / 190)
    ys, xs = np.mgrid[0:28, 0:28]
    assert abs((out * ys).sum() / out.sum() - CENTRE) <= 0.5
    assert abs((out * xs).sum() / out.sum() - CENTRE) <= 0.5
    assert out.max() == 255


def test_colour_and_transparent_images(mnist, tmp_path):
    digit = mnist[5]
    ink = render(digit, 3, (120, 120), (18, 18), light_background=False) / 255.0
    # blue ink on yellow paper
    paper, pen = np.array([250, 240, 150]), np.array([20, 30, 160])
    coloured = (paper * (1 - ink[..., None]) + pen * ink[..., None]).astype(np.uint8)
    Image.fromarray(coloured).save(tmp_path / "colour.png")
    # black strokes on a transparent background
    rgba = np.zeros((120, 120, 4), dtype=np.uint8)
    rgba[..., 3] = (ink * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "transparent.png")
    for name in ("colour.png", "transparent.png"):
        assert correlation_up_to_one_pixel(load_digit(tmp_path / name), digit) > 0.9, name


def test_16_bit_grayscale(mnist, tmp_path):
    digit = mnist[6]
    wide = render(digit, 2, (80, 80), (12, 12), light_background=True).astype(np.uint16) * 257
    Image.fromarray(wide).save(tmp_path / "deep.png")
    assert read_image(tmp_path / "deep.png").max() <= 255
    assert correlation_up_to_one_pixel(load_digit(tmp_path / "deep.png"), digit) > 0.9


def test_faint_noise_neither_widens_the_crop_nor_moves_the_digit(mnist):
    digit = mnist[7]
    clean = render(digit, 3, (150, 150), (30, 30), light_background=True).astype(float)
    noisy = clean - np.random.default_rng(0).uniform(0, 15, clean.shape)
    assert correlation_up_to_one_pixel(to_mnist(noisy), to_mnist(clean)) > 0.97


def test_blank_image_is_a_user_error_naming_the_file(tmp_path):
    Image.fromarray(np.full((50, 50), 255, dtype=np.uint8)).save(tmp_path / "blank.png")
    with pytest.raises(UserError, match=r"blank\.png: no digit found"):
        load_digit(tmp_path / "blank.png")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.png", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: (d / "notes.png").write_text("not an image") and d / "notes.png", "not an image format"),
        (lambda d: (d / "cut.png").write_bytes(_png_bytes()[:60]) and d / "cut.png", "not a readable image"),
    ],
)
def test_unreadable_files_are_one_line_user_errors_naming_the_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(UserError, match=message) as caught:
        load_digit(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def _png_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def blank_png(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of width x height zeros: a few kB that decode to width*height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes((width + 7) // 8)  # filter byte, then the packed bits
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20000, 12000, 4097])
def test_a_huge_image_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch, capsys, side):
    """A 20000x20000 PNG is a decompression bomb to Pillow; 12000x12000 passes Pillow but needed 3.6 GB."""
    path = tmp_path / "huge.png"
    path.write_bytes(blank_png(side, side))
    assert path.stat().st_size < 200_000

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(UserError, match=r"huge\.png: .*more than 16\.8 megapixels \(4096x4096\) are refused") as caught:
        read_image(path)
    assert "\n" not in str(caught.value)
    assert "DecompressionBomb" not in capsys.readouterr().err  # Pillow's warning is not printed either


def test_the_size_limit_is_documented_and_an_ordinary_photo_passes(tmp_path):
    assert MAX_PIXELS == 4096 * 4096
    Image.fromarray(np.eye(300, dtype=np.uint8) * 255).resize((4000, 3000)).save(tmp_path / "photo.png")
    assert load_digit(tmp_path / "photo.png").shape == (28, 28)
