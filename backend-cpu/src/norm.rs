//! `norm` ops on the CPU (being written).
