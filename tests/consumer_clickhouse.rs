//! Integration tests: see the issue this suite belongs to.
