//! `gaussian` ops on the CPU (being written).
