//! Integration tests of the harness.
