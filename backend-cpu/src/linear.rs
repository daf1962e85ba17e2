//! `linear` ops on the CPU (being written).
