//! Provenance on the pack side: `[[verify]]` rules at lock and build, and what build carries.
