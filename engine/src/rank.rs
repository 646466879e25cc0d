//! The exact Supercashback ranking of one award period (placeholder: being written).
