//! Placeholder for issue 13 (tls); the helper that owns it replaces this file.
