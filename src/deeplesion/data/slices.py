"""Reading slices: 16-bit PNG -> int16 Hounsfield units.

Arrays are indexed ``[row, col]`` = ``[y - 1, x - 1]`` for DL_info pixel (x, y).
"""

from __future__ import annotations

import io
import itertools
import struct
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from deeplesion.errors import ImageReadError, InvalidArgumentError, InvalidTypeError

#: PNG value of 0 HU.
HU_OFFSET = 32768
#: Largest side (px) a slice may have when no expected size is given; DeepLesion slices
#: are 512 x 512 (a few are larger, none above 1024). A bigger header is not decoded.
MAX_SLICE_SIDE_PX = 4096
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}


@dataclass(frozen=True, slots=True)
class PngHeader:
    """What a PNG's IHDR chunk says, read without decoding the image."""

    rows: int
    cols: int
    bit_depth: int
    color_type: int  #: 0 = grayscale

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.cols


def parse_png_header(data: bytes, path: str | Path = "") -> PngHeader:
    """The IHDR of PNG bytes (the first 33 are enough); ImageReadError naming ``path``."""
    if data[:8] != _PNG_SIGNATURE:
        raise ImageReadError(f"{path}: not a PNG file (no PNG signature)")
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ImageReadError(f"{path}: truncated or malformed PNG header")
    cols, rows, depth, color = struct.unpack(">IIBB", data[16:26])
    return PngHeader(rows, cols, depth, color)


def read_png_header(path: str | Path) -> PngHeader:
    """Read only the header of a slice PNG (33 bytes): size, bit depth, colour type."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(33)
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_png_header(data, path)


def check_png_header(
    header: PngHeader, path: str | Path, expected_shape: tuple[int, int] | None = None
) -> PngHeader:
    """Raise ImageReadError unless the header is a 16-bit grayscale slice of the expected
    ``(rows, cols)`` (DL_info's ``Image_size``), or, without one, of a plausible size."""
    if header.bit_depth != 16 or header.color_type != 0:
        kind = _COLOR_TYPES.get(header.color_type, f"colour type {header.color_type}")
        raise ImageReadError(f"{path}: not a 16-bit grayscale PNG ({header.bit_depth}-bit {kind})")
    if expected_shape is not None and header.shape != tuple(expected_shape):
        rows, cols = expected_shape
        raise ImageReadError(
            f"{path}: image is {header.rows}x{header.cols} (rows x cols), DL_info says "
            f"{rows}x{cols}; not used"
        )
    if not 0 < max(header.rows, header.cols) <= MAX_SLICE_SIDE_PX or min(header.shape) == 0:
        raise ImageReadError(
            f"{path}: header says {header.rows}x{header.cols} pixels, not a plausible CT "
            f"slice (at most {MAX_SLICE_SIDE_PX} a side); not decoded"
        )
    return header


def png_to_hu(raw: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Raw PNG values (uint16, or int32 from old Pillow) -> int16 HU, without wrap-around.

    Flipping the sign bit of a uint16 is exactly ``value - 32768`` in int16. ``out`` (an
    int16 array of ``raw``'s shape, e.g. one slice of a volume buffer) receives the result.

    Example:

        >>> import numpy as np
        >>> png_to_hu(np.array([0, 31744, 32768, 65535], dtype=np.uint16)).tolist()
        [-32768, -1024, 0, 32767]
    """
    raw = np.asarray(raw)
    if raw.dtype == np.uint16 and out is not None:
        np.bitwise_xor(raw, np.uint16(0x8000), out=out.view(np.uint16))
        return out
    if raw.dtype == np.uint16:
        return (raw ^ np.uint16(0x8000)).view(np.int16)
    if out is not None:
        out[...] = png_to_hu(raw)
        return out
    if np.issubdtype(raw.dtype, np.integer):
        if raw.size and (raw.min() < 0 or raw.max() > 0xFFFF):
            raise InvalidArgumentError("PNG values must lie in 0..65535")
        return (raw.astype(np.int32) - HU_OFFSET).astype(np.int16)
    raise InvalidTypeError(f"expected an integer array, got {raw.dtype}")


def hu_to_png(hu: np.ndarray) -> np.ndarray:
    """int16 HU -> uint16 PNG values (the inverse of :func:`png_to_hu`)."""
    hu = np.asarray(hu)
    if hu.dtype != np.int16:
        if hu.size and (hu.min() < -32768 or hu.max() > 32767):
            raise InvalidArgumentError("HU values must lie in -32768..32767")
        hu = hu.astype(np.int16)
    return hu.view(np.uint16) ^ np.uint16(0x8000)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png_raw(
    path: str | Path, expected_shape: tuple[int, int] | None = None, *, opencv: bool = False
) -> np.ndarray:
    """Read a 16-bit grayscale PNG as uint16 ``[row, col]``.

    The header is checked before anything is decoded (:func:`check_png_header`: 16-bit
    grayscale, ``expected_shape`` = DL_info's rows, cols when given, a plausible size).
    Raises :class:`ImageReadError` naming the file when it is missing, unreadable, not
    16-bit or of the wrong size. ``opencv=True`` decodes with OpenCV when it is installed
    (the ``[torch]`` extra; bit-identical values, about 10% less CPU than Pillow); a file it
    does not decode to 16-bit grayscale is read by Pillow as without it, so errors are the
    same, but libpng then prints a line on stderr.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    check_png_header(parse_png_header(data, path), path, expected_shape)
    if opencv and data.startswith(_PNG_SIGNATURE):
        decoded = _decode_opencv(data)
        if decoded is not None:
            return decoded
    try:
        with Image.open(io.BytesIO(data)) as img:
            mode = img.mode
            if mode not in ("I;16", "I;16B", "I;16L", "I"):
                raise ImageReadError(f"{path}: not a 16-bit grayscale PNG (mode {mode})")
            if img.format != "PNG":
                raise ImageReadError(f"{path}: not a PNG (format {img.format})")
            arr = np.asarray(img)
    except ImageReadError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{path}: not an image file") from exc
    except (OSError, SyntaxError, ValueError, zlib.error, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: unreadable PNG: {exc}") from exc
    if arr.dtype != np.uint16:
        if arr.min() < 0 or arr.max() > 0xFFFF:
            raise ImageReadError(f"{path}: values outside 16-bit range")
        arr = arr.astype(np.uint16)
    return arr


def read_hu(path: str | Path, expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read one slice as int16 HU ``[row, col]`` (header checked as :func:`read_png_raw`)."""
    return png_to_hu(read_png_raw(path, expected_shape))


def write_hu_png(path: str | Path, hu: np.ndarray, *, compress_level: int = 6) -> None:
    """Write int16 HU as a release-format 16-bit PNG (value + 32768), atomically."""
    from deeplesion.data.io import atomic_path

    raw = hu_to_png(hu)
    with atomic_path(path) as tmp:
        Image.fromarray(raw).save(tmp, format="PNG", compress_level=compress_level)


def _decode_opencv(data: bytes) -> np.ndarray | None:
    """uint16 ``[row, col]`` from OpenCV, or None (not installed, or not 16-bit gray)."""
    try:
        import cv2
    except ImportError:
        return None
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 2:
        return None
    return arr


def prefetch(pool: ThreadPoolExecutor, fn, items) -> Iterator[Future]:
    """``pool.submit(fn, item)`` for each item, one item ahead of the consumer."""
    items = iter(items)
    pending = [pool.submit(fn, item) for item in itertools.islice(items, 1)]
    for item in items:
        pending.append(pool.submit(fn, item))
        yield pending.pop(0)
    yield from pending


class SliceFailure(ImageReadError):
    """A slice of a run that cannot be used, with its number (the NIfTI export and the
    store report it and convert the pieces on either side)."""

    def __init__(self, slice_number: int, reason: str) -> None:
        super().__init__(reason)
        self.slice_number, self.reason = slice_number, reason


def decoded_slices(
    slice_numbers: Sequence[int],
    paths: Sequence[Path],
    image_size: tuple[int, int] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(slice number, raw uint16 rows x cols) of each slice of a run, the next one decoded
    in a thread meanwhile. Raises :class:`SliceFailure` at the first slice that cannot be
    decoded, or whose size differs from ``image_size`` (DL_info's rows, cols; when given)
    or from the run's first slice."""
    shape: tuple[int, ...] | None = None
    with ThreadPoolExecutor(max_workers=1) as decoder:
        for n, png, future in zip(slice_numbers, paths, prefetch(decoder, read_png_raw, paths)):
            try:
                raw = future.result()
            except ImageReadError as exc:
                raise SliceFailure(n, str(exc)) from exc
            if image_size is not None and raw.shape != tuple(image_size):
                rows, cols = image_size
                raise SliceFailure(
                    n,
                    f"{png}: image is {raw.shape[0]}x{raw.shape[1]} (rows x cols), "
                    f"DL_info says {rows}x{cols}; not used",
                )
            if shape is None:
                shape = raw.shape
            elif raw.shape != shape:
                raise SliceFailure(
                    n,
                    f"{png}: size {raw.shape[0]}x{raw.shape[1]} differs from "
                    f"{shape[0]}x{shape[1]} of the run's first slice",
                )
            yield n, raw
