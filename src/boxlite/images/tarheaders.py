"""Reading tar headers with a cap: what every tar reader of image data uses (layer unpack, OCI
layout archives), in a module light enough for a ``boxlite run --rootfs`` to import without the
layer decompressors."""

from __future__ import annotations

import tarfile
from typing import Any

from ..errors import ImageTooLargeError, UnsafeLayerError

MAX_EXT_HEADER = 1 << 20  # pax / GNU long-name / sparse-map bytes before one member (read into memory)
MAX_HEADER_CHAIN = 16  # extended headers before one member (tarfile recurses through them)
_EXT_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.GNUTYPE_SPARSE,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


class _ReadCap:
    """Proxy of tarfile's stream that refuses to read more than ``left`` bytes."""

    def __init__(self, raw: Any, left: int) -> None:
        self._raw = raw
        self._left = left

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            raise ImageTooLargeError(f"extended tar headers of one layer member exceed {MAX_EXT_HEADER} bytes")
        self._left -= n
        return bytes(self._raw.read(n))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class BoundedTarInfo(tarfile.TarInfo):
    """TarInfo whose extended headers (pax, GNU long names, sparse maps) are read with a cap.

    tarfile reads such a header whole into memory and recurses through chains of them: a
    compressed layer could otherwise make it buffer GiBs.
    """

    def _proc_member(self, tf: Any) -> Any:
        if self.type not in _EXT_TYPES:
            return super()._proc_member(tf)  # type: ignore[misc]
        depth = getattr(tf, "_boxlite_depth", 0)
        if depth >= MAX_HEADER_CHAIN:
            raise UnsafeLayerError(f"more than {MAX_HEADER_CHAIN} extended tar headers before one member")
        raw = tf.fileobj
        tf.fileobj = _ReadCap(raw, MAX_EXT_HEADER)
        tf._boxlite_depth = depth + 1
        try:
            return super()._proc_member(tf)  # type: ignore[misc]
        finally:
            tf.fileobj = raw
            tf._boxlite_depth = depth
