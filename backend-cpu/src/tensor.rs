//! `tensor` ops on the CPU (being written).
