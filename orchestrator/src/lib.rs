//! berthd (being built: see issue 5).
