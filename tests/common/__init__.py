"""Tests for common/."""
