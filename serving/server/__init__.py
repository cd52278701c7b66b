"""The embedded TF Serving-compatible model server: `python -m serving.server` (see main.py)."""
