//! `repair` on a hostile gap host (issue 14): filled in on this branch.
