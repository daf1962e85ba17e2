//! `roi` ops on the CPU (being written).
