"""The cross-framework parity suite: both twins side by side (the contract: docs/parity.md)."""
