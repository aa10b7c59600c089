//! Boot tests.
