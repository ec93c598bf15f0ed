"""The cross-framework parity suite: both twins side by side (see README.md here)."""
