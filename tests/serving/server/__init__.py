"""Tests for serving/server/, the embedded model server."""
