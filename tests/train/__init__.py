"""Tests for train/."""
