"""Tests for model/."""
