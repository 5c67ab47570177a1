//! BuildKit-compatible word expansion. (Being written.)
