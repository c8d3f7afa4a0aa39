//! The HTTPS admission server around the injection engine. (Skeleton: lands with issue 3.)
