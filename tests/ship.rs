//! Placeholder for issue 13 (ship); the helper that owns it replaces this file.
