//! The load generator behind `ragwatch-loadgen` (work in progress).
