//! outrigger-pilot (the server comes with the xDS step).
fn main() {}
