"""Tests for serving/."""
