"""Tests for deploy/."""
