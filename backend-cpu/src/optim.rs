//! `optim` ops on the CPU (being written).
