//! `loss` ops on the CPU (being written).
