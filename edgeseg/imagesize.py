"""An image file's size from its header, read before anything is decoded.

A 20000 x 20000 PNG of a flat colour is a few KB on disk and 1.2 GB once decoded as BGR: the size has to
be known first. The formats the image sources take (``.jpg``, ``.png``, ``.bmp``, ``.tif``, ``.webp``,
``.pgm``/``.ppm``) are known here by their signature, not by their suffix, as OpenCV knows them.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import BinaryIO

_HEAD = 32  # bytes that hold the size of a PNG, BMP or WebP, and a PNM's or a TIFF's start
_JPEG_SEGMENTS = 1024  # a camera's JPEG has a dozen before its frame header
_JPEG_FILL = 4096  # fill bytes (0xFF) before markers, over the whole header: encoders write none or a few


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says: its ``format`` (``jpeg``, ``png``, ...) and size in pixels."""

    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def image_header(path: str) -> ImageHeader | None:
    """The header of the image at ``path``; None for a format not read here, a header cut short, or a file
    that cannot be read (the decoder then says what is wrong)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
            found = _size(f, head)
    except (OSError, struct.error, ValueError, IndexError):
        return None
    return None if found is None else ImageHeader(found[0], max(found[1], 0), max(found[2], 0))


def _size(f: BinaryIO, head: bytes) -> tuple[str, int, int] | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        return ("png", *struct.unpack(">II", head[16:24]))
    if head.startswith(b"\xff\xd8"):
        return _jpeg(f)
    if head.startswith(b"BM"):
        if struct.unpack("<I", head[14:18])[0] == 12:  # the OS/2 header: 16-bit sizes
            return ("bmp", *struct.unpack("<HH", head[18:22]))
        width, height = struct.unpack("<ii", head[18:26])
        return "bmp", width, abs(height)  # a negative height is a top-down bitmap
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp(head)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff(f, "<" if head[:2] == b"II" else ">", head)
    if re.match(rb"P[1-6]\s", head):
        text = re.sub(rb"#[^\n]*", b" ", head[2:] + f.read(1024))  # comments may come between the numbers
        width, height = text.split()[:2]
        return "pnm", int(width), int(height)
    return None


def _jpeg(f: BinaryIO) -> tuple[str, int, int] | None:
    """The size in the first start-of-frame segment, past the others (EXIF, ICC profiles, tables), within
    the first :data:`_JPEG_SEGMENTS`: a file of nothing but empty ones would take a Python loop each."""
    f.seek(2)
    fill = 0
    for _ in range(_JPEG_SEGMENTS):
        prefix, kind = f.read(1), f.read(1)
        while kind == b"\xff" and fill < _JPEG_FILL:  # fill bytes before a marker
            kind, fill = f.read(1), fill + 1
        if prefix != b"\xff" or not kind or kind == b"\xff":
            return None
        if kind[0] == 0x01 or 0xD0 <= kind[0] <= 0xD8:  # markers without a segment
            continue
        (length,) = struct.unpack(">H", f.read(2))
        if length < 2:  # a seek back: the same marker again, for ever
            return None
        if 0xC0 <= kind[0] <= 0xCF and kind[0] not in (0xC4, 0xC8, 0xCC):  # SOFn, not DHT, JPG, DAC
            height, width = struct.unpack(">xHH", f.read(5))
            return "jpeg", width, height
        f.seek(length - 2, 1)
    return None


def _webp(head: bytes) -> tuple[str, int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X":  # extended: 24-bit sizes less one
        return "webp", int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    if chunk == b"VP8L":  # lossless: 14-bit sizes less one after the signature byte
        bits = int.from_bytes(head[21:25], "little")
        return "webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the frame tag and start code
        width, height = struct.unpack("<HH", head[26:30])
        return "webp", width & 0x3FFF, height & 0x3FFF
    return None


def _tiff(f: BinaryIO, order: str, head: bytes) -> tuple[str, int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first image's directory."""
    (offset,) = struct.unpack(order + "I", head[4:8])
    f.seek(offset)
    (count,) = struct.unpack(order + "H", f.read(2))
    found: dict[int, int] = {}
    for _ in range(min(count, 4096)):
        tag, kind, _n, value = struct.unpack(order + "HHI4s", f.read(12))
        if tag in (256, 257):
            found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), value[: 2 if kind == 3 else 4])[0]
    return ("tiff", found[256], found[257]) if len(found) == 2 else None
