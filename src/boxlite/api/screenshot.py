"""XWD (what ``xwd -root`` prints) to PNG, in pure Python (struct + zlib, no imaging library).

The bytes come from a box, so every header field is checked against the data actually received
before anything is sized from it.
"""

from __future__ import annotations

import struct
import zlib

from ..errors import ParseError

XWD_HEADER = struct.Struct(">25I")
MAX_SIDE = 16384
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def xwd_to_png(data: bytes) -> tuple[bytes, int, int]:
    """Convert a 24/32-bit TrueColor ZPixmap XWD dump to (PNG bytes, width, height)."""
    width, height, rgb = xwd_to_rgb(data)
    return encode_png(width, height, rgb), width, height


def xwd_to_rgb(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, packed RGB rows) of an XWD dump; ParseError for anything else."""
    if len(data) < XWD_HEADER.size:
        raise ParseError(f"screenshot: {len(data)} bytes is shorter than an XWD header")
    h = XWD_HEADER.unpack_from(data)
    header_size, version, fmt, _depth, width, height = h[0:6]
    byte_order, bits_per_pixel, bytes_per_line = h[7], h[11], h[12]
    masks, ncolors = h[14:17], h[19]
    if version != 7 or fmt != 2:
        raise ParseError(f"screenshot: XWD version {version} format {fmt} (want 7, ZPixmap)")
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise ParseError(f"screenshot: size {width}x{height} out of range")
    if bits_per_pixel != 32 or bytes_per_line < width * 4:
        raise ParseError(f"screenshot: {bits_per_pixel} bits per pixel, {bytes_per_line} bytes per line unsupported")
    if masks != (0xFF0000, 0xFF00, 0xFF):
        raise ParseError(f"screenshot: colour masks {[hex(m) for m in masks]} unsupported")
    if header_size < XWD_HEADER.size or ncolors > 1 << 16:
        raise ParseError("screenshot: malformed XWD header")
    start = header_size + ncolors * 12
    end = start + bytes_per_line * height
    if end > len(data):
        raise ParseError(f"screenshot: {len(data)} bytes, the XWD header promises {end}")
    pixels = data[start:end]
    if bytes_per_line != width * 4:
        pixels = b"".join(pixels[y * bytes_per_line : y * bytes_per_line + width * 4] for y in range(height))
    # LSBFirst pixels are B G R X in memory, MSBFirst X R G B.
    r, g, b = (2, 1, 0) if byte_order == 0 else (1, 2, 3)
    rgb = bytearray(width * height * 3)
    rgb[0::3], rgb[1::3], rgb[2::3] = pixels[r::4], pixels[g::4], pixels[b::4]
    return width, height, bytes(rgb)


def encode_png(width: int, height: int, rgb: bytes, level: int = 6) -> bytes:
    """An 8-bit RGB PNG (filter 0 on every row) of ``rgb`` (``width*3`` bytes per row)."""
    stride = width * 3
    if len(rgb) != stride * height:
        raise ParseError(f"encode_png: {len(rgb)} bytes for {width}x{height} RGB")
    raw = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, level)) + chunk(b"IEND", b"")
