//! `conv` ops on the CPU (being written).
