//! Placeholder for issue 13 (progress); the helper that owns it replaces this file.
