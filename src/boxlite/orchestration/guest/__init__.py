"""Files copied into managed boxes (``boxlite_runtime.py``: stdlib only, never imported by the host)."""
