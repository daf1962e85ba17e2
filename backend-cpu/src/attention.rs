//! `attention` ops on the CPU (being written).
