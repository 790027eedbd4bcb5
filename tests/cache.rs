//! Placeholder for issue 13 (cache); the helper that owns it replaces this file.
