//! outrigger-pilot.
