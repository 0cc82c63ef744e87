"""Host file-system helpers for writing trees that someone else (a box, an image) describes.

``dirfd``: openat-style walking (one ``O_NOFOLLOW`` directory fd per component).
``tarread``: a tar reader that trusts nothing in the stream.
``extract``: copy_out extraction on top of both, with limits.
"""
