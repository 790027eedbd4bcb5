//! Parity parts and `repair` from the command line (issue 14): filled in on this branch.
