//! Shared harness for pathvm's integration tests.
