//! Placeholder for issue 13 (compose); the helper that owns it replaces this file.
